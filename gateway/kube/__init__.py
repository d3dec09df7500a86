"""Kubernetes plumbing shared by the kubernetes spawner and the session controller."""
