"""One progress display for a whole hub download, fed by every worker thread."""

from __future__ import annotations

import threading

from tqdm import tqdm


class Stopped(Exception):
    """Raised inside a worker's transfer after another file failed or Ctrl-C."""


class Progress:
    """One byte bar and one file bar for the whole run, fed by every worker.

    huggingface_hub makes one progress object per file from the ``tqdm_class`` it is given;
    :meth:`file_bar` is that class, and adds each file's size and bytes to the shared bar (as
    ``snapshot_download`` does).  Its ``update`` is called for every chunk received, which is
    where a stopped run makes the other workers leave.  ``disable=None`` hides the bars when
    stderr is not a terminal; ``--quiet`` always.
    """

    def __init__(self, desc: str, files: int, quiet: bool) -> None:
        disable = True if quiet else None
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.bytes = tqdm(
            desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=disable, leave=False
        )
        self.files = tqdm(desc=desc, total=files, unit="file", disable=disable, leave=False)

    def close(self) -> None:
        self.bytes.close()
        self.files.close()

    def add(self, count: float | None) -> None:
        if self.stop.is_set():
            raise Stopped()
        with self.lock:
            self.bytes.update(count or 0)

    def file_bar(self) -> type:
        progress = self

        class FileBar:
            def __init__(self, *args: object, total: int | None = None, initial: int = 0, **_):
                with progress.lock:
                    if total:
                        progress.bytes.total = (progress.bytes.total or 0) + total
                        progress.bytes.refresh()
                progress.add(initial)

            def __enter__(self) -> FileBar:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def close(self) -> None:
                pass

            def update(self, count: float | None = 1) -> None:
                progress.add(count)

            def update_transfer(self, count: float | None = 1) -> None:
                """Network bytes (Xet deduplicates): the bar counts bytes written instead."""

            def set_postfix_str(self, *args: object, **kwargs: object) -> None:
                pass

            set_transfer_postfix_str = set_postfix_str

        return FileBar
