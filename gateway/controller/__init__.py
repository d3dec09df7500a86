"""The session controller: reconciles Session resources into session pods."""
