"""Ingest planning: what the warehouse already has, what is new, what to hash and probe.

An ingest is incremental and idempotent:
- a file whose (path, size, mtime) is already recorded as ingested or rejected is skipped
  without being read again;
- other files are hashed (sha256 of the bytes); content already known only adds a name to
  ``video_files`` (or copies its rejection); new content is probed once, from its first path
  in sorted order, however many names it has;
- text (sidecars, embedded streams, manifest rows) is keyed by (video, source file, content
  hash), so new or edited subtitle files are picked up for videos ingested earlier.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from tasks.ingest.scan import Candidate
from tasks.shared.errors import IngestError
from warehouse import queries
from warehouse.atomic import sha256_file
from warehouse.store import Warehouse


@dataclass
class KnownState:
    """What the committed warehouse already holds, loaded once at the start of a run."""

    files: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    errors: dict[tuple[str, str], tuple[int | None, int | None]] = field(default_factory=dict)
    error_by_abs: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    error_shas: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    videos: dict[str, float] = field(default_factory=dict)
    text_sources: set[str] = field(default_factory=set)
    text_by_path: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    audio: dict[str, str | None] = field(default_factory=dict)  # video -> audio codec
    text_cues: dict[str, int] = field(default_factory=dict)  # video -> non-ASR cues
    asr_failed: set[str] = field(default_factory=set)  # videos with an ASR error row


def load_state(wh: Warehouse) -> KnownState:
    """Read the committed state needed to plan an incremental ingest."""
    con = wh.connect()
    st = KnownState()
    for abs_path, size, mtime, vid in con.execute(queries.load("known_files")).fetchall():
        st.files[abs_path] = (size, mtime, vid)
    for path, root, abs_path, size, mtime, sha, code, msg, stage in con.execute(
            queries.load("known_errors")).fetchall():
        st.errors[(path, root or "")] = (size, mtime)
        if abs_path:
            st.error_by_abs[abs_path] = (size, mtime)
        if sha and stage in ("probe", "validate", "scan"):
            st.error_shas.setdefault(sha, (code, msg, stage))
        if sha and stage == "asr":
            st.asr_failed.add(sha)
    st.videos = dict(con.execute(queries.load("known_videos")).fetchall())
    for tsid, vid, abs_path in con.execute(queries.load("known_text_sources")).fetchall():
        st.text_sources.add(tsid)
        st.text_by_path.setdefault((vid, abs_path or ""), []).append(tsid)
    for vid, has_audio, codec, cues in con.execute(queries.load("known_audio")).fetchall():
        if has_audio:
            st.audio[vid] = codec
        st.text_cues[vid] = int(cues or 0)
    con.close()
    return st


def is_unchanged(c: Candidate, st: KnownState) -> bool:
    """True when this exact file (path, size, mtime) was already ingested or rejected."""
    known = st.files.get(c.abs_path)
    if known is not None and known[:2] == (c.size, c.mtime_ns):
        return True
    err = st.error_by_abs.get(c.abs_path)
    return err is not None and err == (c.size, c.mtime_ns)


def hash_candidates(cands: list[Candidate]) -> list[tuple[Candidate, str | None, str | None]]:
    """Hash each file; returns (candidate, sha256 or None, error message or None)."""
    out: list[tuple[Candidate, str | None, str | None]] = []
    for c in cands:
        try:
            out.append((c, sha256_file(c.abs_path), None))
        except OSError as e:
            out.append((c, None, f"cannot read {c.path!r}: {e}"))
    return out


@dataclass
class NewContent:
    """A video content not in the warehouse, with every name it was found under."""

    sha: str
    size: int
    names: list[Candidate]

    @property
    def rep(self) -> Candidate:
        """The name it is probed from: the first in sorted order (deterministic)."""
        return self.names[0]


@dataclass
class WorkPlan:
    """The outcome of hashing: new contents, extra names, and re-seen rejected content."""

    new: list[NewContent] = field(default_factory=list)
    duplicates: list[tuple[Candidate, str]] = field(default_factory=list)
    known_bad: list[tuple[Candidate, str, tuple[str, str, str]]] = field(default_factory=list)
    unreadable: list[tuple[Candidate, IngestError]] = field(default_factory=list)


def make_plan(hashed: list[tuple[Candidate, str | None, str | None]],
              st: KnownState) -> WorkPlan:
    """Group hashed files by content and decide what each one needs."""
    plan = WorkPlan()
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for cand, sha, err in hashed:
        if sha is None:
            plan.unreadable.append((cand, IngestError("io_error", err or "unreadable", "hash")))
        elif sha in st.videos:
            plan.duplicates.append((cand, sha))
        elif sha in st.error_shas:
            plan.known_bad.append((cand, sha, st.error_shas[sha]))
        else:
            groups[sha].append(cand)
    for sha, names in sorted(groups.items(), key=lambda kv: min(c.path for c in kv[1])):
        names.sort(key=lambda c: c.path)
        plan.new.append(NewContent(sha, names[0].size, names))
    return plan

