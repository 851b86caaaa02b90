"""Reading a Dockerfile for the images its build pulls: stages, global ARGs, ``FROM`` and ``--from``.

Pure text → data, and data → the images one build of one platform uses, the way BuildKit resolves
them: ARGs declared before the first ``FROM`` (and the automatic ``TARGET*`` platform args) are the
only variables a ``FROM`` sees, a cell's build args override their defaults, ``FROM <earlier stage>``
and ``FROM scratch`` pull nothing, a named context (bake's ``contexts``) replaces the image of that
name, and only the stages the built stage depends on are built (BuildKit skips the others).

A stage ``FROM --platform=$BUILDPLATFORM`` runs on the builder's own platform, which is not known
before a builder node is picked (multi-node builders have several): its image must exist, but no
target platform is asked of it. A literal ``--platform=linux/amd64`` asks exactly that platform.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from multibake.refs import repository_problem, untagged

_NAME = re.compile(r"[A-Za-z_]\w*")
_BRACED = re.compile(r"([A-Za-z_]\w*)(?:(:?[-+])(.*))?", re.DOTALL)
_HEREDOC = re.compile(r"<<(-?)([\"']?)(\w+)\2")
_ESCAPE_DIRECTIVE = re.compile(r"#\s*escape\s*=\s*(\S)\s*$", re.IGNORECASE)
_BUILD_PLATFORM = re.compile(r"\$\{?BUILD(PLATFORM|OS|ARCH|VARIANT)\b")


class DockerfileError(ValueError):
    """A Dockerfile whose base images cannot be worked out (BuildKit would refuse it too)."""


class Unsupported(DockerfileError):
    """Syntax BuildKit may accept but multibake does not read (``${VAR%suffix}``, …): not a refusal."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Stage:
    index: int
    name: str | None  # lowercase, as BuildKit compares stage names
    image: str  # FROM's image, variables not yet substituted
    platform: str | None  # FROM --platform=, as written
    line: int
    sources: tuple[str, ...] = ()  # COPY --from= and RUN --mount=from= values, as written


@dataclass(frozen=True, kw_only=True, slots=True)
class Dockerfile:
    args: tuple[tuple[str, str | None], ...]  # global ARGs in order: name, default as written
    stages: tuple[Stage, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Use:
    """One image a build pulls (or takes from a named context)."""

    image: str  # the reference after substitution, or the name of a named context
    context: bool  # a named context replaces it
    platform: str | None  # the platform it must provide; None: the build platform (existence only)
    line: int
    final: bool  # the built stage's own base, followed through stage references


def _escape(lines: list[str]) -> str:
    """The escape character: parser directives come first; only ``escape`` changes how lines join."""
    escape = "\\"
    for line in lines:
        if not line.startswith("#"):
            break
        if m := _ESCAPE_DIRECTIVE.match(line):
            escape = m.group(1)
    return escape


def _joined(lines: list[str], i: int, escape: str) -> tuple[int, str]:
    """The instruction starting at line ``i``, its continuations joined; and the index after it."""
    parts: list[str] = []
    while i < len(lines):
        raw = lines[i].strip()
        i += 1
        if raw.startswith("#") or (not raw and parts):
            continue  # comments and blank lines inside a continued instruction
        if raw.endswith(escape):
            parts.append(raw[:-1])
            continue
        parts.append(raw)
        break
    return i, " ".join(p for p in parts if p)


def instructions(text: str) -> Iterator[tuple[int, str, str]]:
    """(line, KEYWORD, rest) per instruction: continuations joined, comments and heredoc bodies dropped."""
    lines = text.splitlines()
    escape = _escape(lines)
    i = 0
    while i < len(lines):
        start = i + 1
        i, joined = _joined(lines, i, escape)
        if not joined:
            continue
        keyword, _, rest = joined.partition(" ")
        for dash, _, word in _HEREDOC.findall(rest):  # a heredoc's body is not instructions
            while i < len(lines) and (lines[i].lstrip("\t") if dash else lines[i]) != word:
                i += 1
            i += 1
        yield start, keyword.upper(), rest.strip()


def _words(rest: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def parse(text: str) -> Dockerfile:
    args: list[tuple[str, str | None]] = []
    stages: list[Stage] = []
    sources: list[str] = []
    for line, keyword, rest in instructions(text):
        if keyword == "ARG" and not stages:
            for word in _words(rest):
                name, eq, default = word.partition("=")
                args.append((name, default if eq else None))
        elif keyword == "FROM":
            if stages:
                stages[-1] = _with_sources(stages[-1], sources)
            sources = []
            stages.append(_stage(len(stages), line, rest))
        elif keyword in ("COPY", "ADD", "RUN") and stages:
            sources += _sources(rest)
    if stages:
        stages[-1] = _with_sources(stages[-1], sources)
    return Dockerfile(args=tuple(args), stages=tuple(stages))


def _with_sources(stage: Stage, sources: list[str]) -> Stage:
    return Stage(
        index=stage.index,
        name=stage.name,
        image=stage.image,
        platform=stage.platform,
        line=stage.line,
        sources=tuple(sources),
    )


def _stage(index: int, line: int, rest: str) -> Stage:
    words = rest.split()
    platform = None
    while words and words[0].startswith("--"):
        flag, _, value = words.pop(0).partition("=")
        if flag == "--platform":
            platform = value
    if not words:
        raise DockerfileError(f"line {line}: FROM names no image")
    name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
    return Stage(index=index, name=name, image=words[0], platform=platform, line=line)


def _sources(rest: str) -> list[str]:
    """``COPY --from=X`` and ``RUN --mount=…,from=X``: stages or images a stage reads from."""
    found = []
    for word in rest.split():
        if not word.startswith("--"):
            break  # flags come first
        flag, _, value = word.partition("=")
        if flag == "--from":
            found.append(value)
        elif flag == "--mount":
            fields = dict(part.partition("=")[::2] for part in value.split(","))
            if fields.get("from"):
                found.append(fields["from"])
    return found


def expand(word: str, env: Mapping[str, str | None]) -> str:
    """``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:+alt}``, ``${VAR+alt}`` (nested)."""
    out: list[str] = []
    i = 0
    while i < len(word):
        if word.startswith("\\$", i):
            out.append("$")
            i += 2
        elif word.startswith("${", i) and (end := _closing(word, i + 2)) > 0:
            out.append(_braced(word[i + 2 : end], env))
            i = end + 1
        elif word[i] == "$" and (m := _NAME.match(word, i + 1)):
            out.append(env.get(m.group()) or "")
            i = m.end()
        else:
            out.append(word[i])
            i += 1
    return "".join(out)


def _closing(word: str, start: int) -> int:
    """The index of the ``}`` closing a ``${`` whose body starts at ``start``, or -1."""
    depth = 1
    for i in range(start, len(word)):
        depth += {"{": 1, "}": -1}.get(word[i], 0)
        if depth == 0:
            return i
    return -1


def _braced(body: str, env: Mapping[str, str | None]) -> str:
    m = _BRACED.fullmatch(body)
    if m is None:
        raise Unsupported(f"substitution ${{{body}}} is not one multibake reads")
    value, op, alt = env.get(m.group(1)), m.group(2), m.group(3)
    if op is None:
        return value or ""
    given = bool(value) if op.startswith(":") else value is not None
    if op.endswith("-"):
        return value if given and value is not None else expand(alt, env)
    return expand(alt, env) if given else ""


def global_env(df: Dockerfile, args: Mapping[str, str], platform: str) -> dict[str, str | None]:
    """The variables a ``FROM`` sees when building for ``platform`` with build ``args``."""
    os_, arch, *variant = platform.split("/")
    auto = {"TARGETPLATFORM": platform, "TARGETOS": os_, "TARGETARCH": arch, "TARGETVARIANT": "".join(variant)}
    env: dict[str, str | None] = dict(auto)
    for name, default in df.args:
        if name in auto:
            continue  # BuildKit sets these; a redeclaration only exposes them
        if name in args:
            env[name] = args[name]
        else:
            env[name] = expand(default, env) if default is not None else None
    return env


def uses(
    df: Dockerfile,
    *,
    platform: str,
    args: Mapping[str, str],
    stage: str | None = None,
    contexts: frozenset[str] = frozenset(),
) -> tuple[Use, ...]:
    """Every image one build of ``platform`` pulls, for the stages ``stage`` (default: the last) needs."""
    if not df.stages:
        raise DockerfileError("no FROM instruction")
    env = global_env(df, args, platform)
    by_name = {s.name: s for s in df.stages if s.name}
    target = by_name.get(stage.lower()) if stage else df.stages[-1]
    if target is None:
        raise DockerfileError(f"no stage named {stage!r} (the family's target)")
    found: list[Use] = []
    final = _final_chain(df, env, target)
    todo, seen = [target], set()
    while todo:
        s = todo.pop()
        if s.index in seen:
            continue
        seen.add(s.index)
        needs = _platform_of(s, env, platform)
        for word, is_from in ((s.image, True), *((src, False) for src in s.sources)):
            image = expand(word, env)
            earlier = _earlier(df, s, image, by_name, is_from)
            if earlier is not None:
                todo.append(earlier)
            elif image.lower() != "scratch":
                ctx = image in contexts or untagged(image) in contexts
                found.append(Use(image=image, context=ctx, platform=needs, line=s.line, final=is_from and s in final))
    for use in found:
        if not use.context:
            _check_reference(use)
    return tuple(sorted(found, key=lambda u: (not u.final, u.line, u.image)))


def _earlier(df: Dockerfile, s: Stage, image: str, by_name: Mapping[str, Stage], is_from: bool) -> Stage | None:
    """The stage ``image`` names: an earlier stage's name (or, after ``--from``, its index)."""
    named = by_name.get(image.lower())
    if named is not None and named.index < s.index:
        return named
    if not is_from and image.isdigit() and int(image) < s.index:
        return df.stages[int(image)]
    return None


def _final_chain(df: Dockerfile, env: Mapping[str, str | None], target: Stage) -> set[Stage]:
    """The built stage and the stages its ``FROM`` goes through: the image's own ancestry."""
    by_name = {s.name: s for s in df.stages if s.name}
    chain, s = {target}, target
    while (nxt := _earlier(df, s, expand(s.image, env), by_name, True)) is not None:
        chain.add(nxt)
        s = nxt
    return chain


def _platform_of(s: Stage, env: Mapping[str, str | None], platform: str) -> str | None:
    if s.platform is None:
        return platform
    if _BUILD_PLATFORM.search(s.platform):
        return None  # the builder's own platform: unknown until a node is picked
    return expand(s.platform, env) or platform


def _check_reference(use: Use) -> None:
    name = untagged(use.image.partition("@")[0])
    problem = "is empty" if not name else repository_problem(name)
    if problem:
        raise DockerfileError(f"line {use.line}: image {use.image!r} (after substituting ARGs) {problem}")
