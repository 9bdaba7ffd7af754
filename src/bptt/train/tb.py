"""TensorBoard event files of a run (`bptt train --tensorboard [DIR]`; DIR by default
RUN/tensorboard, written `{run}/tensorboard` in the config: `{run}` stands for the run folder).

Every row the run writes to metrics.jsonl also goes here (report.Metrics hands it over), so the two
hold the same numbers (TensorBoard keeps float32):

    train/loss, train/lr, train/grad_norm (before clipping), train/tokens_per_s   every update
    val/<figure> (loss; bits/char and perplexity for text, NMSE and MSE for series, ...)
    train/clip_rate (the share of updates since the last evaluation that were clipped,
                     as `bptt diagnose` counts it), sample (text: a sample at temperature 0.8)
                                                                               every evaluation

The writer: tensorboardX's protobuf messages and its record framing (`RecordWriter`, CRC-32C),
written here synchronously. tensorboardX's SummaryWriter hands events to a thread through a queue
that its flush() does not drain, so the events up to a checkpoint could still be in memory when the
run is killed; here a checkpoint flushes (and fsyncs) the event file with metrics.jsonl.

Resume: metrics.jsonl's rows after the checkpoint are dropped, and so are the events after it: the
run's event files in DIR are rewritten without them (and without a record torn by a kill). The
resumed run then writes a new event file that starts with a SessionLog START at the first new step
(what TensorBoard reads as "forget anything at or after this step", for a TensorBoard that was
watching while the run was resumed), so no step is ever in DIR twice. DIR is one TensorBoard run:
a new run refuses a DIR that already holds event files (give each run its own and point
`tensorboard --logdir` at the folder above them).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any

import numpy as np

from ..errors import BpttError
from .checkpoint import atomic_write
from .diagnose import clip_rates

DEFAULT = "{run}/tensorboard"  # --tensorboard alone
INSTALL = "pip install 'bptt[tensorboard]'"
SAMPLE_TEMPERATURE = 0.8


def require() -> None:
    """tensorboardX importable, or the one line saying what to install."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise BpttError(
            f"tensorboard: expected the tensorboardX package to write TensorBoard's event files ({INSTALL}), "
            "received none installed"
        ) from None


def resolve(value: str, run_dir: str) -> str:
    return os.path.normpath(value.replace("{run}", run_dir))


def event_files(path: str) -> list[str]:
    """The event files in folder `path`, in the order TensorBoard reads them (by name)."""
    if not os.path.isdir(path):
        return []
    return sorted(os.path.join(path, n) for n in os.listdir(path) if "tfevents" in n)


def check(value: str, run_dir: str, resumed: bool = False, before: str = "") -> str:
    """The event folder of option `value` for the run in `run_dir`, checked before anything is
    written: tensorboardX installed, a folder (or a path under folders) this user can write, and,
    unless the run wrote there before (resumed, with the folder inside the run folder or the one
    of its saved config, `before`), one without event files of another run."""
    require()
    path = resolve(value, run_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise BpttError(f"tensorboard: expected a folder for the event files, received {value!r}, which is a file")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise BpttError(f"tensorboard: expected a path under folders, received {value!r}, under the file {parent!r}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BpttError(f"tensorboard: expected a folder this user can write in, received {value!r}")
    where, run = os.path.abspath(path), os.path.abspath(run_dir)
    own = resumed and (
        os.path.commonpath([where, run]) == run or bool(before) and where == os.path.abspath(resolve(before, run_dir))
    )
    found = event_files(path)
    if found and not own:
        raise BpttError(
            f"tensorboard: expected a folder without event files (TensorBoard would draw two runs as one), "
            f"received {value!r}, which holds {len(found)} (give each run its own folder, e.g. logs/NAME, and "
            "run tensorboard --logdir logs)"
        )
    return path


def read_records(path: str) -> tuple[list[bytes], bool]:
    """The records of one event file (TFRecord framing: length, its CRC, data, its CRC), and
    whether it ended in a torn one (a run killed mid-write), which is left out."""
    with open(path, "rb") as f:
        data = f.read()
    out, i = [], 0
    while i < len(data):
        if i + 12 > len(data):
            return out, True
        (n,) = struct.unpack_from("<Q", data, i)
        if i + 12 + n + 4 > len(data):
            return out, True
        out.append(data[i + 12 : i + 12 + n])
        i += 12 + n + 4
    return out, False


def read_events(path: str) -> list[Any]:
    """The Event messages of one event file (tensorboardX.proto.event_pb2.Event), a torn last one
    left out."""
    from tensorboardX.proto.event_pb2 import Event

    return [Event.FromString(r) for r in read_records(path)[0]]


def truncate(path: str, step: int) -> int:
    """Keep only the events up to `step` in every event file of folder `path` (a resumed run
    writes what came after again); returns the events dropped (a torn record counted)."""
    from google.protobuf.message import DecodeError

    dropped = 0
    for name in event_files(path):
        records, torn = read_records(name)
        keep = []
        for r in records:
            try:
                s = _event().FromString(r).step
            except DecodeError:
                torn = True
                break
            if s <= step:
                keep.append(r)
        gone = len(records) - len(keep) + torn
        if gone:
            dropped += gone
            framed = b"".join(_frame(r) for r in keep)
            atomic_write(name, lambda f: f.write(framed))
    return dropped


def _frame(record: bytes) -> bytes:
    """One record in TFRecord framing, as tensorboardX's RecordWriter writes it."""
    from tensorboardX.record_writer import masked_crc32c

    head = struct.pack("<Q", len(record))
    return head + struct.pack("<I", masked_crc32c(head)) + record + struct.pack("<I", masked_crc32c(record))


def _event():
    from tensorboardX.proto.event_pb2 import Event

    return Event


class Board:
    """The run's event file in folder `path`: one new file per session of the run, starting at
    update `start` (resumed: after truncating the folder's files to it). `rows`: metrics.jsonl's
    rows so far (a resumed run's clip rate counts the updates since the last evaluation)."""

    def __init__(self, path: str, cfg: Any, start: int, resumed: bool, rows: list[dict] | None = None) -> None:
        from tensorboardX import RecordWriter
        from tensorboardX.proto.event_pb2 import SessionLog

        self.path, self.cfg = path, cfg
        os.makedirs(path, exist_ok=True)
        self.dropped = truncate(path, start) if resumed else 0
        self._rows = [r for r in (rows or []) if r.get("split") in ("train", "val")]
        last_val = max((i for i, r in enumerate(self._rows) if r["split"] == "val"), default=-1)
        self._rows = self._rows[last_val + 1 :]  # the train rows since the last evaluation
        stamp = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        n = 0  # another session of the run in the same second and process: a file of its own
        while os.path.exists(os.path.join(path, f"{stamp}.{n}.bptt")):
            n += 1
        self.file = os.path.join(path, f"{stamp}.{n}.bptt")
        self._writer = RecordWriter(self.file)
        Event = _event()
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if resumed:
            self._write(Event(wall_time=time.time(), step=start + 1, session_log=SessionLog(status=SessionLog.START)))

    def _write(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())

    def _summary(self, summary: Any, step: int) -> None:
        self._write(_event()(wall_time=time.time(), step=step, summary=summary))

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX.summary import scalar

        self._summary(scalar(tag, float(value)), step)

    def text(self, tag: str, text: str, step: int) -> None:
        from tensorboardX.summary import text as text_summary

        self._summary(text_summary(tag, text), step)

    def row(self, row: dict) -> None:
        """One metrics.jsonl row as scalars (other splits, such as 'flow', are not drawn)."""
        split, step = row.get("split"), row["step"]
        if split == "train":
            for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
                if _number(row.get(key)):
                    self.scalar(f"train/{key}", row[key], step)
            self._rows.append(row)
        elif split == "val":
            for key, v in row.items():
                if key not in ("step", "split") and _number(v):
                    self.scalar(f"val/{key}", v, step)
            if self.cfg.clip > 0:
                rates = clip_rates([*self._rows, row], self.cfg.clip)
                if rates:
                    self.scalar("train/clip_rate", rates[0]["clip_rate"], step)
            self._rows = []

    def sample(self, step: int, model: Any, params: Any, vocab: Any) -> str:
        """A text run's sample at an evaluation (--sample-length characters at temperature 0.8,
        from a generator of its own seeded by --seed: the run's own draws are untouched)."""
        from ..generate import sample_text

        text = sample_text(
            model,
            params,
            vocab,
            length=self.cfg.sample_length,
            temperature=SAMPLE_TEMPERATURE,
            rng=np.random.default_rng(self.cfg.seed),
        )
        # TensorBoard reads text as Markdown: indented, it is shown as written (line breaks kept)
        self.text("sample", "\n".join("    " + line for line in text.split("\n")), step)
        return text

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))
