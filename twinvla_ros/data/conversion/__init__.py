"""Episode bags -> LeRobot v3.0 datasets (`twinvla-ros convert`).

  timeline.py     resampling onto a 1/fps grid by real stamps: linear xyz, slerp, hold, gaps
  bag_streams.py  a bag's poses, targets, joint states and frame stamps in one pass; frames in a second
  episode.py      convert_episode: one bag -> a StagedEpisode (20-D state/action, per-camera video)
  convert.py      convert: many bags in worker processes -> one dataset via the writer
"""
from .convert import ConversionResult, convert, find_bags
from .episode import ConversionOptions, EpisodeRejected, convert_episode

__all__ = ["ConversionOptions", "ConversionResult", "EpisodeRejected", "convert", "convert_episode", "find_bags"]
