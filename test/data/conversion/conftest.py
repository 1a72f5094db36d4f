"""The recorder tests' message builders (test/data/bag_messages.py) for the bags made here."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
