"""No two distinct user ids ever map to one derived name, in every mapping the platform has:
Kubernetes labels, volume and Secret names, Session names, local user directories, TURN
usernames (gateway/identity.py, kube/objects.py, spawners/kubernetes.py, spawners/local.py)."""
from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.identity import turn_user
from gateway.kube import objects
from gateway.spawners.kubernetes import session_names
from gateway.spawners.local import user_dir_name

MAPPINGS: dict[str, Callable[[str], object]] = {
    "user label": objects.user_label,
    "user volume": objects.pvc_name,
    "rclone Secret": objects.rclone_secret_name,
    "Session names (gimp)": lambda u: frozenset(session_names(u, "gimp")),
    "local directory": user_dir_name,
    "TURN user": turn_user,
}

# Ids that look alike on purpose: case variants, escapes, separators, unicode look-alikes.
ids = st.one_of(
    st.text(min_size=1, max_size=80),
    st.from_regex(r"[A-Za-z]{1,8}[@._-][A-Za-z]{1,8}\.(org|com)", fullmatch=True),
    st.builds(lambda base, flips: "".join(c.upper() if f else c for c, f in zip(base, flips)),
              st.just("alice.smith@example.org"), st.lists(st.booleans(), min_size=23, max_size=23)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(ids, min_size=2, max_size=12, unique=True))
def test_no_two_ids_share_a_derived_name(users: list[str]) -> None:
    for name, mapping in MAPPINGS.items():
        derived = [mapping(u) for u in users]
        if name.startswith("Session names"):
            seen: set[str] = set()
            for names in derived:
                assert not (names & seen), (name, users)
                seen |= names
        else:
            assert len(set(derived)) == len(users), (name, users)


def test_the_pairs_the_review_found() -> None:
    pairs = [("alice-x-org-1facc80f", "alice@x.org"), ("alice_x.org-1facc80ff25b", "alice@x.org"),
             ("AlIcE.smIth@EXAmple.org", "ALice.sMiTh@eXAMPle.org"), ("a.b", "a-b"), ("a", "A")]
    for a, b in pairs:
        for name, mapping in MAPPINGS.items():
            assert mapping(a) != mapping(b), (name, a, b)
