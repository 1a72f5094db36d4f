"""Episode bags: one rosbag2 folder (storage MCAP) per demonstration, written from raw CDR
messages without ROS, crash safe, and read back by ros2 bag, rosbags, the mcap library and
Foxglove.

  topics.py     TopicSpec, the input checks, message definitions from rosbags' Kilted type store
  writer.py     BagFileWriter: the MCAP file as rosbag2 writes it, chunks closed by size and age
  files.py      metadata.yaml (rosbag2 v9) and the episode.json sidecar, replaced atomically
  directory.py  RecordingDirectory: the dataset folder, its config, numbering, free-space checks
  recorder.py   EpisodeRecorder: the non-blocking queue, the writer thread, rates, flags, summaries
  recovery.py   recover_bag: a complete bag again from what a killed recorder left
  summary.py    bag_summary: `ros2 bag info` without ROS
  preview.py    episode_preview: a camera video and an EEF plot of one episode
"""
from .directory import EpisodeRecord, RecordingDirectory, bags_under
from .preview import Preview, episode_preview
from .recorder import EpisodeRecorder, EpisodeSummary, TopicStats
from .recovery import RecoveryError, RecoveryReport, recover_bag
from .summary import BagSummary, TopicSummary, bag_summary
from .topics import ConfigMismatch, RecordingError, TopicSpec

__all__ = ["BagSummary", "ConfigMismatch", "EpisodeRecord", "EpisodeRecorder", "EpisodeSummary",
           "RecordingDirectory", "RecordingError", "RecoveryError", "RecoveryReport", "TopicSpec",
           "TopicStats", "TopicSummary", "bag_summary", "bags_under", "episode_preview", "Preview", "recover_bag"]
