"""Continual learning: a model learns a stream of experiences in turn without forgetting the earlier ones.

stream.py builds the experiences (class-incremental label groups, or one data source each), memory.py
keeps the replay memory, learner.py learns a stream with one method and measures forgetting.
"""
