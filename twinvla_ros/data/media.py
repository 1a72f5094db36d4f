"""Things a person looks at: videos of camera streams and plots of EEF trajectories."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float, codec: str = "libx264",
                crf: int = 23) -> Path:
    """uint8 HxWx3 RGB frames -> an mp4 (yuv420p, playable everywhere). Returns the path."""
    import av

    if not frames:
        raise ValueError("no frames to write")
    height, width = frames[0].shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=int(round(fps)), options={"crf": str(crf)})
        # yuv420p needs even dimensions.
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        for image in frames:
            if image.shape[:2] != (height, width):
                raise ValueError(f"frame of shape {image.shape} in a {height}x{width} video")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: stream.height, : stream.width]),
                                               format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def plot_eef_tracking(path: str | Path, commanded: dict[str, tuple[np.ndarray, np.ndarray]],
                      reached: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> Path:
    """Commanded vs reached EEF positions per arm: {arm: (times (n,), xyz (n, 3))} -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = sorted(set(commanded) | set(reached))
    fig, axes = plt.subplots(3, len(arms), figsize=(6 * len(arms), 7), sharex=True, squeeze=False)
    for col, arm in enumerate(arms):
        for row, axis_name in enumerate("xyz"):
            ax = axes[row][col]
            if arm in commanded and len(commanded[arm][0]):
                t, xyz = commanded[arm]
                ax.plot(t, xyz[:, row], ".", markersize=2.5, color="tab:orange", label="commanded (policy)")
            if arm in reached and len(reached[arm][0]):
                t, xyz = reached[arm]
                ax.plot(t, xyz[:, row], "-", linewidth=1.2, color="tab:blue", label="reached (robot)")
            ax.set_ylabel(f"{arm} {axis_name} [m]")
            ax.grid(alpha=0.3)
        axes[0][col].set_title(f"{arm} arm EEF")
        axes[-1][col].set_xlabel("time since instruction [s]")
    axes[0][0].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
