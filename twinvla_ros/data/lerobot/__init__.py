"""LeRobotDataset v3.0 with TwinVLA's keys, written and read without lerobot (it pins an older
torch): pyarrow, pandas and PyAV only.

  format.py   the keys, file templates and StagedEpisode (one converted episode)
  video.py    per-episode encoding (AV1 / h264), concatenation by stream copy, frame decoding
  stats.py    meta/stats.json fields and TwinVLA's dataset_statistics.json
  writer.py   DatasetWriter: new or appended datasets, published whole or not at all
  check.py    check_dataset: what the lerobot and TwinVLA readers rely on, file by file
  reader.py   LeRobotEpisodes: samples with 20-step action chunks for fine-tuning
  show.py     show_episode: trajectory plot and contact sheet of one episode

Import the modules themselves (nothing is re-exported here, so the format constants load
without pyarrow or PyAV).
"""
