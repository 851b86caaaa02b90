"""``multibake verify``'s signature half: every image a public or per-platform tag serves, checked with cosign.

A multi-arch tag serves its index and each platform image in it; a per-platform tag serves its image.
Each distinct image is verified once (by digest, in parallel); a tag whose image carries no signature,
or one that does not verify with the public key, fails, naming the tag, the platform and the digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from multibake.kinds import Echo, Signature
from multibake.plan.model import Plan
from multibake.release.publish import TagCheck
from multibake.release.signing import Signing

INDEX = "index"


def _served(check: TagCheck) -> list[tuple[str, str]]:
    """(what, digest) of every image ``check``'s tag serves: its index and platform images, or its image."""
    if check.digest is None:
        return []
    if check.kind == INDEX:
        return [(INDEX, check.digest), *check.platforms]
    return [(check.kind, check.digest)]


def check_signatures(plan: Plan, checks: Sequence[TagCheck], signing: Signing, say: Echo) -> list[TagCheck]:
    """``checks`` with the signature state of each image their tags serve; a bad one fails its check."""
    cells = {c.target: c for c in plan.cells}
    wanted = {
        (check.target, f"{cells[check.target].image}@{digest}")
        for check in checks
        if signing.signer(cells[check.target]) is not None
        for _, digest in _served(check)
    }
    items = sorted(wanted)  # each image once, every cell's in one pool of cosign runs
    states = signing.verify([(cells[target], image) for target, image in items])
    state = {image: said for (_, image), said in zip(items, states, strict=True)}
    out = []
    for check in checks:
        cell = cells[check.target]
        if signing.signer(cell) is None:
            out.append(check)
            continue
        found = [(what, d, state[f"{cell.image}@{d}"]) for what, d in _served(check)]
        bad = [
            f"{what} {d}: signature {s.value}" + (f" ({why})" if why else "")
            for what, d, (s, why) in found
            if s is not Signature.SIGNED
        ]
        for line in bad:
            say(f"multibake: verify: {check.ref}: {line}")
        problem = "; ".join(p for p in (check.problem, *bad) if p) or None
        signatures = tuple((what, d, s.value) for what, d, (s, _) in found)
        out.append(replace(check, ok=check.ok and not bad, problem=problem, signatures=signatures))
    return out
