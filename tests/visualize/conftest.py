import pytest

from lenet_np import train
from tests.test_train import make_dataset


@pytest.fixture(scope="package")
def trained(tmp_path_factory):
    """A checkpoint of lenet_np.train (1 epoch on a toy set, a per-step row at each of its 3
    steps), its per-epoch metrics and the per-step file beside them, as train wrote them."""
    root = tmp_path_factory.mktemp("vis")
    data_dir = make_dataset(root / "data", n_train=96, n_test=60)
    ck, epochs = root / "lenet.npz", root / "metrics.csv"
    assert train.main(["--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "32", "--quiet", "--device",
                       "cpu", "--checkpoint", str(ck), "--metrics", str(epochs), "--seed", "3",
                       "--log-every", "1"]) == 0
    return {"root": root, "data": data_dir, "ck": ck, "metrics": epochs}
