"""Tests import the package from this source tree (python/qkv), which finds
libqkv through $QKV_LIBRARY or the tree's build/release."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
