"""Cold start: add-products embeds new products from metadata, without retraining."""

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dualrec.cli import app
from dualrec.coldstart import add_products
from dualrec.graph import DualrecError, UnknownProductError
from dualrec.pipeline import train_dataset
from dualrec.retrieval import Recommender
from dualrec.synthetic import make_store
from dualrec.train import TrainConfig


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    g = make_store(n_products=2000, seed=7)
    g.save(root / "dataset")
    # The metadata-only form (the paper's; ``daemon_paper`` in the benchmark): with per-product
    # embeddings and uniform negatives only (the default, best for known products) a new product
    # is rarely recommended before retraining -- measured in the benchmark's cold-start section.
    cfg = TrainConfig(encoder="hash", epochs=12, patience=4, seed=0, id_dim=0, in_batch_negatives=True)
    # DAEMON alone: these tests are about its cold start. (The second stage ranks products added
    # after its fit below its candidates: tests/test_retrieval.py.)
    train_dataset(root / "dataset", root / "model", cfg, progress=False, log=lambda m: None, rerank=False)
    return root, g


def _new_accessory(g, category_id, new_id):
    p = g.products
    acc = p[(p["category_id"] == category_id) & (p["role"] == "accessory")].iloc[0]
    row = acc.to_dict()
    row["id"] = new_id
    row["title"] = "Novara " + " ".join(acc["title"].split()[1:])  # same kind words, new brand
    row["brand"] = "Novara"
    return pd.DataFrame([row]).drop(columns=["role", "category_id"])


def test_new_accessory_is_recommended_for_its_category_mains(model, tmp_path):
    root, g = model
    import shutil

    mdir = tmp_path / "model"
    shutil.copytree(root / "model", mdir)
    before = Recommender.load(mdir)
    p = g.products
    cat = int(p.loc[p["role"] == "main", "category_id"].value_counts().index[0])
    mains = p[(p["category_id"] == cat) & (p["role"] == "main")]["id"].tolist()
    others = p.sample(200, random_state=0)["id"].tolist()
    k = 20
    old = {r.query: r.ids for r in before.recommend(others, k)}

    ids = add_products(mdir, _new_accessory(g, cat, "NEW-ACC-1"))
    assert ids == ["NEW-ACC-1"]
    after = Recommender.load(mdir)
    assert after.num_products == before.num_products + 1
    # The new accessory (no sales yet) enters the top-k of most of its category's main products,
    # k = 10 % of the catalogue, and ranks far better for them than for other categories' mains.
    k_cat = after.num_products // 10
    hits = [("NEW-ACC-1" in r.ids) for r in after.recommend(mains, k_cat)]
    assert np.mean(hits) >= 0.5, np.mean(hits)

    def median_rank(query_ids):
        sc = torch.from_numpy(after.source[after.index_of(query_ids).numpy()] @ after.target.T)
        new_col = int(after.index_of(["NEW-ACC-1"]))
        return float((sc > sc[:, new_col : new_col + 1]).sum(1).float().median()) + 1

    other_mains = p[(p["category_id"] != cat) & (p["role"] == "main")]["id"].tolist()[:300]
    assert 3 * median_rank(mains) < median_rank(other_mains)
    # ... and the direction holds: main -> new accessory scores above new accessory -> main.
    q = after.index_of(["NEW-ACC-1"]).numpy()
    mi = after.index_of(mains).numpy()
    fwd = after.source[mi] @ after.target[q].T
    rev = after.target[mi] @ after.source[q].T
    assert (fwd > rev).mean() >= 0.8
    # It works as a query too, and never recommends itself.
    r = after.recommend(["NEW-ACC-1"], 5)[0]
    assert len(r.ids) == 5 and "NEW-ACC-1" not in r.ids
    # Old products' recommendations are unchanged except where the new product enters.
    for rr in after.recommend(others, k):
        kept = [i for i in rr.ids if i != "NEW-ACC-1"]
        assert kept == old[rr.query][: len(kept)]
    # Old embeddings are untouched.
    np.testing.assert_array_equal(after.source[: before.num_products], before.source)


def test_add_products_with_edges_and_errors(model, tmp_path):
    root, g = model
    import shutil

    mdir = tmp_path / "model"
    shutil.copytree(root / "model", mdir)
    new = _new_accessory(g, 0, "NEW-2")
    some_main = g.products[g.products["role"] == "main"]["id"].iloc[0]
    add_products(mdir, new, copurchase=pd.DataFrame({"src": [some_main], "dst": ["NEW-2"]}))
    with pytest.raises(DualrecError, match="already exist"):
        add_products(mdir, new)
    with pytest.raises(UnknownProductError, match="NOPE"):
        add_products(mdir, _new_accessory(g, 0, "NEW-3"), similar=pd.DataFrame({"a": ["NEW-3"], "b": ["NOPE"]}))
    with pytest.raises(DualrecError, match="'id' column"):
        add_products(mdir, pd.DataFrame({"title": ["x"]}))
    # a failed add leaves the folder as it was
    assert Recommender.load(mdir).num_products == g.num_products + 1


def test_cli_add_products(model, tmp_path):
    root, g = model
    import shutil

    mdir = tmp_path / "model"
    shutil.copytree(root / "model", mdir)
    f = tmp_path / "new.csv"
    _new_accessory(g, 1, "CLI-NEW").to_csv(f, index=False)
    runner = CliRunner()
    r = runner.invoke(app, ["add-products", str(mdir), str(f)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["recommend", str(mdir), "CLI-NEW", "--k", "3", "--json"])
    assert r.exit_code == 0 and "CLI-NEW" in r.output
    r = runner.invoke(app, ["add-products", str(mdir), str(tmp_path / "missing.csv")])
    assert r.exit_code == 2 and "file not found" in r.output and "Traceback" not in r.output


def test_add_products_keeps_the_retrieval_index(model, tmp_path):
    """An index built before add-products stays; the loader appends the new rows."""
    import shutil

    from dualrec.index import load_model_index, write_model_index
    from dualrec.store import open_version

    root, g = model
    mdir = tmp_path / "model"
    shutil.copytree(root / "model", mdir)
    write_model_index(mdir, "exact")
    add_products(mdir, _new_accessory(g, 2, "IDX-NEW"))
    v = open_version(mdir)
    assert v.has("index/faiss.index")
    s, t = v.embeddings()
    idx = load_model_index(v, s, t)
    assert idx.n == g.num_products + 1 and idx.meta.get("appended_rows") == 1
    assert not idx.meta.get("in_memory")


def test_add_products_bad_input_is_one_line(model, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from dualrec.cli import app

    root, g = model
    mdir = tmp_path / "model"
    shutil.copytree(root / "model", mdir)
    runner = CliRunner()
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "bad.csv").write_text("id,title,price\nNEW-A,a lamp,abc\n")
    for f, msg in (("empty.csv", "is empty"), ("bad.csv", "price of product 'NEW-A' is 'abc', not a number")):
        r = runner.invoke(app, ["add-products", str(mdir), str(tmp_path / f)])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output, r.output
