import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_EUROSAT = REPO.parent / "shared" / "data" / "eurosat_ms"


@pytest.fixture(scope="session")
def eurosat_dir():
  """The 369 real EuroSAT-MS GeoTIFFs, when ../shared is present; else skip."""
  path = pathlib.Path(os.environ.get("RSH_EUROSAT_DIR", SHARED_EUROSAT))
  if not path.is_dir():
    pytest.skip(f"real EuroSAT folder not present at {path}")
  return path
