"""Fixtures for the dataset tests: tfds mocked, the network and local files under control."""

import pytest
import tensorflow_datasets as tfds

from kerasbnn.data import base


@pytest.fixture
def offline(monkeypatch):
    """No download host answers (the tests must never download)."""
    monkeypatch.setattr(base, "host_reachable", lambda url, timeout=None: False)


@pytest.fixture
def mock_tfds(monkeypatch):
    """tfds.testing.mock_data with 8 examples; downloads 'succeed' as mocked no-ops."""
    monkeypatch.delenv("KERASBNN_OFFLINE")  # set by tests/conftest.py; nothing real downloads
    monkeypatch.setattr(base, "host_reachable", lambda url, timeout=None: True)
    with tfds.testing.mock_data(num_examples=8):
        yield

