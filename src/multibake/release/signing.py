"""Signing inside the release transaction, and reading signatures back.

After every cell of a release is staged and before any public tag moves, publish hands this module the
images the tags are about to point at: each index and each of its platform images, named by digest.
One cosign run per cell signs them all (the key is decrypted once), cells in parallel; a transient
registry failure while a signature is written is retried under the release's retry rule. A cell whose
signing fails moves no tag. ``verify`` checks every image a tag serves with cosign and the public key.

Signatures are where cosign v2 writes them: a ``sha256-<hex>.sig`` tag beside the image. multibake never
takes such a tag (nor cosign's ``.att``/``.sbom`` tags, nor v3's ``sha256-<hex>`` referrers fallback)
for a release tag (``is_signature_tag``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from multibake import cosign
from multibake.config.load import Loaded
from multibake.config.sign import ENV_SCHEME, Cosign, Sign, is_file_key
from multibake.errors import BuildError, UsageError
from multibake.failures import Failure, Kind
from multibake.kinds import Mode, Signature
from multibake.plan.model import Cell
from multibake.registry.auth import Login, auth_key
from multibake.registry.client import Registry
from multibake.registry.connect import parse, plain_http
from multibake.registry.manifest import RawManifest
from multibake.release.resolve import BuildOptions, Target
from multibake.release.tools import Tools
from multibake.release.tools import _policy as policy_for
from multibake.retry import RetryPolicy, Transient

CERTS_ROOT = Path("/etc/docker/certs.d")  # where docker (and so multibake) finds a registry's own CA
WORKERS = 4  # cosign runs at once: each is mostly registry round-trips, and one key decryption
Unsigned = Callable[[Sequence[str]], list[str]]  # which of these images carry no signature yet
_SIGNATURE_TAG = re.compile(r"^sha256-[0-9a-f]{64}(\.(sig|att|sbom))?$")


def is_signature_tag(tag: str) -> bool:
    """A tag cosign writes beside an image (signature, attestation, SBOM, v3 referrers fallback)."""
    return bool(_SIGNATURE_TAG.fullmatch(tag))


def signature_ref(image: str) -> str:
    """Where cosign v2 stores the signature of ``image`` (``repo@sha256:…``): ``repo:sha256-….sig``."""
    repo, _, digest = image.partition("@")
    return f"{repo}:{digest.replace(':', '-')}.sig"


def _family_sign(loaded: Loaded, family: str) -> tuple[Sign | None, tuple[str | int, ...]]:
    own = loaded.config.images[family].sign
    if own is not None:
        return own, ("images", family, "sign")
    return loaded.config.sign, ("sign",)


def signers(loaded: Loaded, forced: bool | None = None, *, verifying: bool = False) -> dict[str, cosign.Signer]:
    """family → how its images are signed; families left unsigned are absent.

    ``forced`` is ``build --sign`` (True: every family, each needing a cosign: section) or ``--no-sign``
    (False: none); None keeps platforms.yaml's word. ``verifying`` (``multibake verify``) needs the
    public key only: a verify job need not hold the private key.
    """
    if forced is False:
        return {}
    out: dict[str, cosign.Signer] = {}
    for family in loaded.config.images:
        section, path = _family_sign(loaded, family)
        if forced and (section is None or section.cosign is None):
            raise UsageError(f"--sign: family {family!r} has no sign: {{cosign: …}} section in {loaded.file}")
        if section is None or section.cosign is None or not (section.enabled or forced):
            continue
        out[family] = _signer(loaded, section.cosign, (*path, "cosign"), verifying=verifying)
    return out


def _signer(loaded: Loaded, spec: Cosign, path: tuple[str | int, ...], *, verifying: bool) -> cosign.Signer:
    """A Signer with key files made absolute (relative to platforms.yaml), checked to exist."""

    def resolved(ref: str | None, key: str) -> str | None:
        if ref is None or not is_file_key(ref):
            return ref
        file = loaded.root / Path(ref).expanduser()
        if not file.is_file():
            raise UsageError(f"{loaded.loc((*path, key))}: no such key file {ref} (relative to {loaded.file})")
        return str(file)

    pub = resolved(spec.pub, "pub")
    if verifying and pub is not None:
        return cosign.Signer(key=spec.key, pub=pub)
    if verifying and spec.key is not None and is_file_key(spec.key):
        beside = (loaded.root / Path(spec.key).expanduser()).with_suffix(".pub")  # as generate-key-pair writes it
        if not beside.is_file():
            raise UsageError(f"{loaded.loc((*path, 'key'))}: verify needs the public key: pub: FILE, or {beside.name}")
        return cosign.Signer(key=spec.key, pub=str(beside))
    key = resolved(spec.key, "key")
    if pub is None and key is not None and is_file_key(key) and Path(key).with_suffix(".pub").is_file():
        pub = str(Path(key).with_suffix(".pub"))  # as `cosign generate-key-pair` writes the pair
    return cosign.Signer(key=key, keyless=spec.keyless, pub=pub, identity=spec.identity, issuer=spec.issuer)


def check_environment(found: Mapping[str, cosign.Signer], environ: Mapping[str, str], *, verifying: bool) -> None:
    """An env:// key whose variable is unset is refused before anything is built (exit 2)."""
    for family, signer in found.items():
        for ref in (signer.pub or signer.key,) if verifying else (signer.key, signer.pub):
            if ref and ref.startswith(ENV_SCHEME) and not environ.get(ref.removeprefix(ENV_SCHEME)):
                raise UsageError(
                    f"family {family!r} is signed with {ref}, and ${ref.removeprefix(ENV_SCHEME)} is unset"
                )


def reach(image: str, certs_root: Path = CERTS_ROOT) -> cosign.Reach:
    """How cosign reaches ``image``'s registry: as docker and multibake's client do (plain HTTP on this
    machine, a registry's own CA from docker's certs.d)."""
    host = parse(image).host
    own = certs_root / host / "ca.crt"
    return cosign.Reach(plain_http=plain_http(host, certs_root), cacert=str(own) if own.is_file() else None)


@contextlib.contextmanager
def registry_config(login: Login | None) -> Iterator[Path | None]:
    """A DOCKER_CONFIG for cosign holding ``login`` (the run's registry credentials), removed afterwards.

    cosign reads credentials as docker does; the password goes in the file, never in cosign's argv.
    """
    if login is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="multibake-cosign-"))  # mode 0700
    try:
        token = base64.b64encode(f"{login.user}:{login.password}".encode()).decode()
        file = folder / "config.json"
        file.touch(mode=0o600)
        file.write_text(json.dumps({"auths": {auth_key(login.host): {"auth": token}}}), encoding="utf-8")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class Signing:
    """Signing a release: who signs each family, how cosign runs, the retry rule of its registry writes."""

    signers: Mapping[str, cosign.Signer]  # family → signer; absent: unsigned
    policy: RetryPolicy
    run: cosign.Runner = cosign.run
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)  # holds $COSIGN_PASSWORD
    docker_config: Path | None = None  # cosign's credentials for the release's registry

    def signer(self, cell: Cell) -> cosign.Signer | None:
        return self.signers.get(cell.family)

    def _env(self) -> dict[str, str]:
        env = dict(self.environ)
        if self.docker_config is not None:
            env["DOCKER_CONFIG"] = str(self.docker_config)
        return env

    def sign(self, jobs: Sequence[tuple[Cell, Sequence[str]]], unsigned: Unsigned = list) -> list[str | None]:
        """Sign each cell's images (``repo@digest``, index first), in parallel: per job None or why not.

        ``unsigned`` tells which of some images still lack a signature: after a transient failure only
        those are signed again (cosign signs one image after the other and stops at the first failure).
        """
        work = [(cell, images, signer) for cell, images in jobs if (signer := self.signer(cell)) and images]
        problems: dict[str, str | None] = {}
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="cosign") as pool:
            done = pool.map(lambda job: self._sign_one(job[2], job[1], unsigned), work)
            problems.update((cell.target, problem) for (cell, _, _), problem in zip(work, done, strict=True))
        return [problems.get(cell.target) for cell, _ in jobs]

    def _sign_one(self, signer: cosign.Signer, images: Sequence[str], unsigned: Unsigned) -> str | None:
        env = self._env()
        what = f"signing {images[0]}" + (f" and {len(images) - 1} platform image(s)" if len(images) > 1 else "")
        left = list(images)

        def once() -> None:
            nonlocal left
            argv = cosign.sign_argv(signer, left, reach(left[0]), cosign.binary(env))
            said = cosign.outcome(self.run(argv, env), env)
            if said.ok:
                return
            if not said.transient:
                raise _Refused(said.reason)
            left = unsigned(left)
            if left:
                raise Transient(Failure(Kind.TRANSIENT, said.reason, ()))

        try:
            self.policy.call(what, once)
        except Transient as exc:
            return f"{what}: still failing after {self.policy.limits.attempts} attempts: {exc}"
        except (_Refused, BuildError) as exc:
            return f"{what}: {exc}"
        return None

    def verify(self, items: Sequence[tuple[Cell, str]]) -> list[tuple[Signature, str]]:
        """The signature state of each (cell, image by digest), with why when it is not signed: cosign
        verify, a few images at once (cosign verifies one image per run, no index recursively)."""
        env = self._env()

        def one(item: tuple[Cell, str]) -> tuple[Signature, str]:
            cell, image = item
            signer = self.signer(cell)
            if signer is None:
                return Signature.UNSIGNED, ""
            said = cosign.outcome(
                self.run(cosign.verify_argv(signer, image, reach(image), cosign.binary(env)), env), env
            )
            if said.ok:
                return Signature.SIGNED, ""
            if "no signatures found" in said.reason:
                return Signature.MISSING, ""
            return Signature.INVALID, said.reason

        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="cosign") as pool:
            return list(pool.map(one, items))


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One cell's signing: images new to a tag (always signed), every image its tags will serve
    (signed when it carries no signature yet: signing turned on for a release that changed nothing),
    and an annotated index to write by digest first (cosign signs what the registry holds)."""

    cell: Cell
    fresh: tuple[str, ...]
    served: tuple[str, ...]
    push: RawManifest | None = None


def job_for(
    cell: Cell, staged: RawManifest, final: RawManifest, held: Mapping[str, RawManifest | None], moving: frozenset[str]
) -> Job:
    """What signing ``cell`` means: the images its tags will serve, and those new to a tag."""
    entries = staged.entries()
    index_moves = any(t in moving for t in cell.tags)
    kept = {was.digest for t in cell.tags if t not in moving and (was := held[t]) is not None}
    fresh_platforms = [
        d
        for p, d in entries.items()
        if index_moves or any(ref in moving for ref in dict(cell.platform_tags).get(p, ()))
    ]
    fresh = ([final.digest] if index_moves else []) + fresh_platforms
    served = sorted({*kept, *([final.digest] if index_moves else []), *entries.values()})
    return Job(
        cell=cell,
        fresh=tuple(f"{cell.image}@{d}" for d in fresh),
        served=tuple(f"{cell.image}@{d}" for d in served),
        push=final if index_moves and final.digest != staged.digest else None,
    )


def sign_release(
    reg: Registry, signing: Signing | None, jobs: Sequence[Job]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Sign what each job needs: (target → images signed, target → why its signing failed); nothing
    without ``signing`` or for a cell whose family is not signed."""
    if signing is None:
        return {}, {}
    jobs = [job for job in jobs if signing.signer(job.cell)]

    def needed(job: Job) -> list[str]:
        others = [i for i in job.served if i not in job.fresh]
        unsigned = [i for i in others if reg.manifest(signature_ref(i)) is None]
        if job.push is not None:
            reg.put_by_digest(job.cell.image, job.push)
        return [*job.fresh, *unsigned]

    refused: dict[str, str] = {}
    todo: list[tuple[Cell, list[str]]] = []
    for job in jobs:
        try:
            todo.append((job.cell, needed(job)))
        except BuildError as exc:
            refused[job.cell.target] = f"signing {job.cell.target}: {exc}"

    def unsigned(images: Sequence[str]) -> list[str]:
        return [i for i in images if reg.manifest(signature_ref(i)) is None]

    problems = signing.sign([(cell, images) for cell, images in todo], unsigned)
    signed: dict[str, tuple[str, ...]] = {}
    for (cell, images), problem in zip(todo, problems, strict=True):
        if problem is not None:
            refused[cell.target] = problem
        elif images:
            signed[cell.target] = tuple(images)
    return signed, refused


@contextlib.contextmanager
def prepared(
    loaded: Loaded,
    policy: RetryPolicy,
    run: cosign.Runner,
    login: Login | None,
    *,
    forced: bool | None = None,
    verifying: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> Iterator[Signing | None]:
    """The release's Signing (None: nothing is signed), checked before anything is built.

    Exit 2 when a key file or env:// variable is missing, or cosign is missing or older than it must be.
    """
    found = signers(loaded, forced, verifying=verifying)
    if not found:
        yield None
        return
    check_environment(found, environ, verifying=verifying)
    cosign.check_version(run, environ, f"sign: in {loaded.file}")
    with registry_config(login) as folder:
        yield Signing(signers=found, policy=policy, run=run, environ=dict(environ), docker_config=folder)


class _Refused(Exception):
    """cosign refused for good: a key it cannot read, a registry that denies the write."""


@contextlib.contextmanager
def for_release(opts: BuildOptions, target: Target, tools: Tools) -> Iterator[Signing | None]:
    """A release that pushes public tags signs them (a shard only stages: ``publish --from`` signs)."""
    if opts.sign and target.mode is not Mode.PUSH:
        raise UsageError("--sign signs what a release publishes: add --push")
    if target.mode is not Mode.PUSH or opts.dry_run or target.shard is not None:
        yield None
        return
    with prepared(
        target.release.loaded, policy_for(target.release, tools), tools.cosign, tools.login, forced=opts.sign
    ) as s:
        yield s
