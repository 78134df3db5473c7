"""A run shown in a Jupyter notebook (or Colab): the image emerging in place, a `tqdm.auto` progress bar (a
widget where ipywidgets is installed, text otherwise) and the statistics table at the end. Imported only
inside a kernel, when a run opens (clipig.api.Run)."""

from __future__ import annotations

import time
import warnings

from IPython.display import display

with warnings.catch_warnings():  # tqdm.auto warns once, when first imported, that without ipywidgets its bar is
    warnings.simplefilter("ignore")  # text, which is fine; imported here before open_clip imports it
    from tqdm.auto import tqdm

SHOWN = 256  # small images are shown enlarged (whole pixels, no smoothing) to at least this many pixels
MIN_INTERVAL = 0.25  # seconds between two updates of the image, at least
COST_SHARE = 0.05  # and the time an update takes is at most this share of the training's


def enlarged(image):
    """A PIL image scaled up by a whole factor (nearest neighbour) to about SHOWN pixels on its longer side."""
    factor = max(1, SHOWN // max(image.size))
    return image.resize((image.width * factor, image.height * factor), 0) if factor > 1 else image


class Live:
    """Listener: the picture of the run (updated a few times a second at most), the progress bar
    (verbose >= 1), and the statistics table at the end (verbose 2)."""

    def __init__(self, verbose: int):
        self.verbose, self.bar, self.handle = verbose, None, None
        self.next_update = 0.0

    def __call__(self, event) -> None:
        if self.verbose < 1:
            return
        if event.kind == "start":
            self.bar = tqdm(total=event.epochs, initial=event.epoch, unit="epoch", mininterval=0.25)
            self.handle = display(self.picture(event), display_id=True)
            self.next_update = time.monotonic() + MIN_INTERVAL  # the start picture counts as an update
        elif event.kind == "epoch":
            self.bar.update(1)
            if time.monotonic() >= self.next_update:
                self.bar.set_postfix(loss=f"{float(event.loss):.4f}", refresh=False)
                self.show(event)
        elif event.kind == "end":
            self.show(event)
            self.bar.close()
            if self.verbose >= 2:
                from ..files.report import run_line, statistics_table
                print(run_line(event) + "\n" + statistics_table(event.statistics()))

    def show(self, event) -> None:
        started = time.monotonic()
        self.handle.update(self.picture(event))
        spent = time.monotonic() - started
        self.next_update = started + max(MIN_INTERVAL, spent / COST_SHARE)

    @staticmethod
    def picture(event):
        from ..files.output import to_pil
        return enlarged(to_pil(event.image()))
