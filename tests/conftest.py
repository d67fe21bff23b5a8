import pytest
from helpers import clustered

pytest_plugins = ["pytester"]  # tests of gpugraph's own pytest plugin


@pytest.fixture
def clustered_case():
    return clustered()
