"""The command-line interface: help, clean errors, and ingest -> train -> evaluate -> recommend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dualrec.cli import app
from dualrec.graph import ProductGraph
from dualrec.retrieval import Recommender
from dualrec.synthetic import make_store

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


def assert_clean_error(result, *needles: str) -> str:
    """Exit code 2, one 'error: ...' message on stderr, no traceback, no stray exception."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    msg = result.stderr.strip()
    assert msg.startswith("error:"), result.output
    assert len(msg.splitlines()) == 1, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


@pytest.fixture(scope="module")
def store() -> ProductGraph:
    return make_store(n_products=400)


@pytest.fixture(scope="module")
def csv_source(store, tmp_path_factory) -> Path:
    """A 'csv' format input folder: products.csv, copurchase.csv (src,dst ids), similar.csv (a,b ids)."""
    d = tmp_path_factory.mktemp("csv_source")
    ids = store.ids
    store.products[["id", "title", "category", "brand", "price"]].to_csv(d / "products.csv", index=False)
    pd.DataFrame({"src": ids[store.cp_src.numpy()], "dst": ids[store.cp_dst.numpy()]}).to_csv(
        d / "copurchase.csv", index=False
    )
    pd.DataFrame({"a": ids[store.sim_a.numpy()], "b": ids[store.sim_b.numpy()]}).to_csv(d / "similar.csv", index=False)
    return d


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("small_dataset")
    make_store(n_products=60).save(d)
    return d


@pytest.fixture
def fake_model(tmp_path) -> Path:
    """The files `recommend` needs, without training (random embeddings)."""
    from dualrec.store import ModelStore

    rng = np.random.default_rng(0)
    n = 12
    store = ModelStore(tmp_path)
    with store.lock(0), store.writer(None) as w:
        for name in ("source", "target"):
            x = rng.standard_normal((n, 4)).astype(np.float32)
            w.save_array(f"{name}.npy", x / np.linalg.norm(x, axis=1, keepdims=True))
        w.save_parquet(
            "products.parquet",
            pd.DataFrame({"id": [f"Q{i}" for i in range(n)], "title": [f"thing {i}" for i in range(n)]}),
        )
        w.commit({"ranker": "daemon", "num_products": n})
    return tmp_path


def edge_ids(g: ProductGraph) -> tuple[set, set]:
    ids = g.ids
    cp = set(zip(ids[g.cp_src.numpy()], ids[g.cp_dst.numpy()]))
    sim = {tuple(sorted(p)) for p in zip(ids[g.sim_a.numpy()], ids[g.sim_b.numpy()])}
    return cp, sim


# ---------------------------------------------------------------------- help
def test_help_lists_commands():
    r = invoke("--help")
    assert r.exit_code == 0, r.output
    for cmd in ("ingest", "train", "evaluate", "recommend", "demo"):
        assert cmd in r.output
    r = invoke("train", "--help")
    assert r.exit_code == 0 and "--encoder" in r.output and "--set" in r.output


# ---------------------------------------------------------------------- clean errors
def test_train_on_missing_folder(tmp_path):
    r = invoke("train", tmp_path / "no-such-dataset", "--out", tmp_path / "m", "--encoder", "hash", "--quiet")
    assert_clean_error(r, "no-such-dataset", "not found")


def test_train_on_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "junk").mkdir()
    r = invoke("train", tmp_path / "junk", "--out", tmp_path / "m", "--encoder", "hash", "--quiet")
    assert_clean_error(r, "not a dualrec dataset", "dualrec ingest")


def test_bad_set_key(small_dataset, tmp_path):
    r = invoke("train", small_dataset, "--out", tmp_path / "m", "--set", "no_such_option=3", "--quiet")
    assert_clean_error(r, "no_such_option")
    r = invoke("train", small_dataset, "--out", tmp_path / "m", "--set", "epochs", "--quiet")
    assert_clean_error(r, "KEY=VALUE")
    assert not (tmp_path / "m" / "CURRENT").exists()


def test_train_in_history_mode_writes_the_same_model_folder(small_dataset, tmp_path):
    from dualrec.store import open_version

    folders = {}
    for mode in ("full", "history"):
        out = tmp_path / mode
        r = invoke(
            "train",
            small_dataset,
            "--out",
            out,
            "--encoder",
            "hash",
            "--epochs",
            "2",
            "--batching",
            mode,
            "--no-rerank",
        )
        assert r.exit_code == 0, (r.output, r.exception)
        assert f"batching: {mode}" in r.output
        v = open_version(out)
        assert v.info["batching"] == mode
        folders[mode] = sorted(p.relative_to(v.dir).as_posix() for p in v.dir.rglob("*") if p.is_file())
    assert folders["full"] == folders["history"]
    r = invoke("recommend", tmp_path / "history", "P0000001", "-k", "3")
    assert r.exit_code == 0, r.output
    r = invoke("train", small_dataset, "--out", tmp_path / "x", "--batching", "clusters", "--quiet")
    assert_clean_error(r, "batching must be one of")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--tune-budget", "60"], "--tune-budget needs --tune-trials"),
        (["--tune-trials", "1"], "at least 2 trials"),
        (["--tune-trials", "2", "--workers", "2"], "tuning runs in one process"),
        (["--no-rerank", "--new-slots", "1"], "--no-rerank skips"),
        (["--new-gate", "price"], "new_gate must be one of daemon, text, both"),
    ],
)
def test_train_refuses_settings_that_cannot_apply(small_dataset, tmp_path, args, needle):
    r = invoke("train", small_dataset, "--out", tmp_path / "m", "--encoder", "hash", *args)
    assert_clean_error(r, needle)
    assert not (tmp_path / "m").exists()


def test_train_records_the_new_product_slots(small_dataset, tmp_path):
    from dualrec.store import open_version

    out = tmp_path / "m"
    args = ["--encoder", "hash", "--epochs", "1", "--new-slots", "1", "--new-min-confidence", "0.3"]
    args += ["--new-gate", "both"]
    r = invoke("train", small_dataset, "--out", out, *args)
    assert r.exit_code == 0, r.output
    v = open_version(out)
    assert v.has_reranker
    assert v.info["new_slots"] == 1 and v.info["new_position"] == 9 and v.info["new_min_confidence"] == 0.3
    saved = v.json("rerank/rerank.json")
    assert saved["config"]["new_slots"] == 1 and saved["config"]["new_min_confidence"] == 0.3
    assert v.info["new_gate"] == saved["config"]["new_gate"] == "both"
    # the scale the confidence is read on travels with the version
    qs = saved["info"]["new_gate"]["quantiles_both"]
    assert len(qs) == 101 and qs == sorted(qs)
    rec = Recommender.load(out)
    assert rec.reranker._new_threshold() == pytest.approx(np.interp(0.3, np.linspace(0, 1, 101), qs))


def test_train_unknown_encoder(small_dataset, tmp_path):
    r = invoke("train", small_dataset, "--out", tmp_path / "m", "--encoder", "word2vec", "--quiet")
    assert_clean_error(r, "word2vec")


def test_features_encodes_a_dataset_ahead_of_train(tmp_path):
    d = tmp_path / "ds"
    make_store(n_products=60).save(d)
    r = invoke("features", d, "--encoder", "hash", "--quiet")
    assert r.exit_code == 0, r.output
    assert "features of 60 products" in r.output and (d / "features-hash.npy").exists()
    assert_clean_error(invoke("features", d, "--encoder", "bert"), "unknown text encoder 'bert'")
    assert_clean_error(invoke("features", tmp_path / "nothing"), "nothing")


@pytest.mark.parametrize("which", ["empty", "dataset", "missing"])
def test_evaluate_on_folder_that_is_not_a_model(which, small_dataset, tmp_path):
    folder = {"empty": tmp_path, "dataset": small_dataset, "missing": tmp_path / "nope"}[which]
    r = invoke("evaluate", folder)
    msg = assert_clean_error(r)
    assert ("not a trained dualrec model" in msg) if which != "missing" else ("not found" in msg)


@pytest.mark.parametrize("which", ["empty", "dataset", "missing"])
def test_recommend_on_folder_that_is_not_a_model(which, small_dataset, tmp_path):
    folder = {"empty": tmp_path, "dataset": small_dataset, "missing": tmp_path / "nope"}[which]
    r = invoke("recommend", folder, "P0000001")
    msg = assert_clean_error(r)
    assert (
        ("not a trained dualrec model" in msg and "dualrec train" in msg)
        if which != "missing"
        else ("not found" in msg)
    )


def test_recommend_unknown_product_id(fake_model):
    r = invoke("recommend", fake_model, "Q1", "NO-SUCH-ID-77", "--k", "3")
    assert_clean_error(r, "NO-SUCH-ID-77")
    assert "Q1" not in r.stderr


def test_recommend_fake_model_text_output(fake_model):
    r = invoke("recommend", fake_model, "Q3", "--k", "4")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("Q3  thing 3   [daemon; scores: DAEMON cosine")  # what the scores are
    assert len(lines) == 1 + 2 * 4 and lines[1].lstrip().startswith("1. Q") and " predicted " in lines[1]
    assert lines[2].strip().startswith("why: DAEMON score")  # each item says why
    assert not any(" Q3 " in ln for ln in lines[1:])


def test_ingest_unknown_format(csv_source, tmp_path):
    r = invoke("ingest", "--format", "xml", "--input", csv_source, "--out", tmp_path / "ds")
    assert_clean_error(r, "unknown format", "'xml'", "csv")
    assert not (tmp_path / "ds").exists()


def test_ingest_bad_option(csv_source, tmp_path):
    r = invoke("ingest", "--format", "csv", "--input", csv_source, "--out", tmp_path / "ds", "--option", "bogus=1")
    assert_clean_error(r, "bogus")
    r = invoke("ingest", "--format", "csv", "--input", csv_source, "--out", tmp_path / "ds", "--option", "bogus")
    assert_clean_error(r, "KEY=VALUE")


def test_ingest_missing_input(tmp_path):
    r = invoke("ingest", "--format", "csv", "--input", tmp_path / "nothing-here", "--out", tmp_path / "ds")
    assert_clean_error(r, "nothing-here")


# ---------------------------------------------------------------------- csv ingest
def test_ingest_csv(store, csv_source, tmp_path):
    out = tmp_path / "ds"
    r = invoke("ingest", "--format", "csv", "--input", csv_source, "--out", out, "--option", "progress=false", "--json")
    assert r.exit_code == 0, r.output
    stdout = r.stdout.strip()
    assert f"dataset written to {out}" in r.stderr  # stdout is the JSON report alone (for jq)
    report = json.loads(stdout)
    assert report["format"] == "csv"
    assert report["products"] == store.num_products
    assert report["copurchase_edges"] == store.num_copurchase
    assert report["similar_pairs"] == store.num_similar

    g = ProductGraph.load(out)
    assert g.ids.tolist() == store.ids.tolist()
    assert {"title", "category", "brand", "price"} <= set(g.products.columns)
    assert "role" not in g.products.columns
    np.testing.assert_allclose(g.products["price"].to_numpy(float), store.products["price"].to_numpy(float))
    assert edge_ids(g) == edge_ids(store)


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_ingest_train_evaluate_recommend(store, csv_source, tmp_path):
    ds, model = tmp_path / "dataset", tmp_path / "model"
    r = invoke("ingest", "--format", "csv", "--input", csv_source, "--out", ds, "--option", "progress=false")
    assert r.exit_code == 0, r.output

    r = invoke("train", ds, "--out", model, "--encoder", "hash", "--epochs", "3", "--quiet")
    assert r.exit_code == 0, (r.output, r.exception)
    assert "Traceback" not in r.output
    assert "validation, DAEMON alone (best epoch" in r.stdout
    assert f"model version v000001 written to {model}" in r.stdout
    assert "ranker: two-stage" in r.stdout
    from dualrec.store import open_version

    v = open_version(model)
    for f in (
        "source.npy",
        "target.npy",
        "products.parquet",
        "weights.safetensors",
        "model.json",
        "rerank/booster.txt",
    ):
        assert v.has(f), f
    assert v.info["ranker"] == "two-stage" and v.info["batching"] == "full"  # small: full-graph steps
    assert (ds / "features-hash.npy").exists()  # features were cached in the dataset folder
    src = v.array("source.npy")
    assert src.shape[0] == store.num_products and np.isfinite(src).all()

    metrics_path = tmp_path / "metrics.json"
    r = invoke("evaluate", model, "--json", metrics_path)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "HitRate@10" in r.stdout and "MRR@10" in r.stdout
    assert "test, two-stage" in r.stdout and "test, DAEMON alone" in r.stdout
    hr10 = float(next(ln for ln in r.stdout.splitlines() if "HitRate@10" in ln).split()[1])
    m = json.loads(metrics_path.read_text())
    assert m["ranker"] == "two-stage"
    assert m["HitRate@10"] == pytest.approx(hr10, abs=1e-4)
    assert 0.0 <= m["MRR@10"] <= m["HitRate@10"] <= m["HitRate@20"] <= 1.0
    assert 0.0 <= m["daemon_alone"]["MRR@10"] <= m["daemon_alone"]["HitRate@10"] <= 1.0
    from dualrec.split import TEST

    assert m["num_queries"] == int((v.split().labels == TEST).sum()) > 0

    query = str(store.ids[1])
    r = invoke("recommend", model, query, "--k", "5", "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    recs = json.loads(r.stdout)
    assert isinstance(recs, list) and len(recs) == 1
    rec = recs[0]
    assert rec["query"] == query
    assert len(rec["ids"]) == 5 and len(set(rec["ids"])) == 5 and len(rec["scores"]) == 5
    assert query not in rec["ids"]
    assert set(rec["ids"]) <= set(store.ids.tolist())
    assert rec["scores"] == sorted(rec["scores"], reverse=True)

    # several queries in one call; the text form shows titles
    q2 = [str(store.ids[i]) for i in (2, 3)]
    r = invoke("recommend", model, *q2, "--k", "3")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 * (1 + 2 * 3)
    assert lines[0].startswith(q2[0]) and lines[7].startswith(q2[1]) and "[two-stage; scores:" in lines[0]
    assert store.products["title"].iloc[2] in lines[0]
    kinds = [ln.split()[2] for ln in lines if ln.strip()[:2].rstrip(".").isdigit()]
    assert set(kinds) <= {"logged", "predicted"} and "logged" in kinds  # logged co-purchases come first
    whys = [ln.strip() for ln in lines if ln.strip().startswith("why: ")]
    assert len(whys) == 6 and any("logged co-purchase" in w for w in whys)
    r = invoke("recommend", model, q2[0], "--k", "30", "--exclude-linked", "--json")
    items = json.loads(r.stdout)[0]["items"]
    assert {x["kind"] for x in items} == {"predicted"} and all(x["title"] and x["reason"] for x in items)
    assert any(x["reason"] != items[0]["reason"] for x in items)  # reasons differ between items


def test_recommend_exclude_linked(tmp_path):
    """--exclude-linked leaves out the query's co-purchase out-neighbours."""
    import json as _json

    from typer.testing import CliRunner

    from dualrec.cli import app
    from dualrec.graph import ProductGraph
    from dualrec.synthetic import make_store

    g = make_store(n_products=300, seed=2)
    g.save(tmp_path / "ds")
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["train", str(tmp_path / "ds"), "--out", str(tmp_path / "m"), "--encoder", "hash", "--epochs", "2", "--quiet"],
    )
    assert r.exit_code == 0, r.output
    g = ProductGraph.load(tmp_path / "ds")
    q = int(g.cp_src[0])
    qid = g.products["id"][q]
    linked = set(g.products["id"][g.cp_dst[g.cp_src == q].numpy()])
    base = runner.invoke(app, ["recommend", str(tmp_path / "m"), qid, "--k", "299", "--json"])
    assert linked & set(_json.loads(base.output)[0]["ids"])  # all products listed: linked ones too
    r = runner.invoke(app, ["recommend", str(tmp_path / "m"), qid, "--k", "299", "--json", "--exclude-linked"])
    assert r.exit_code == 0, r.output
    got = set(_json.loads(r.output)[0]["ids"])
    assert not (got & linked) and len(got) == 299 - len(linked)


def test_serve_help_names_the_write_endpoints_and_refuses_a_weak_token(tmp_path, monkeypatch):
    r = invoke("serve", "--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "POST /products" in text and "POST /admin/reload" in text and "DUALREC_ADMIN_TOKEN" in text
    assert "--admin-token-file" in text and "--admin-token " not in text  # never on the command line
    monkeypatch.setenv("DUALREC_ADMIN_TOKEN", "short")
    r = invoke("serve", tmp_path, "--host", "0.0.0.0")
    assert_clean_error(r, "under 16 characters")


def test_serve_workers_share_one_app_factory_and_refuse_writes(fake_model, monkeypatch):
    """--workers N hands uvicorn an import string (each worker loads the memory-mapped model);
    the write endpoints would reach one worker only, so a token is refused with N > 1."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.delenv("DUALREC_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("DUALREC_ADMIN_TOKEN_FILE", raising=False)
    r = invoke("serve", fake_model, "--workers", "2")
    assert r.exit_code == 0, r.output
    ((app, kw),) = calls
    assert app == "dualrec.serve.app:app_from_env" and kw["factory"] and kw["workers"] == 2
    from fastapi.testclient import TestClient

    from dualrec.serve.app import SERVE_ENV, app_from_env

    client = TestClient(app_from_env(), base_url="http://127.0.0.1")  # what each worker builds
    assert client.get("/products/Q3/related", params={"k": 2}).status_code == 200
    assert client.post("/products", json={"products": []}).status_code == 403
    monkeypatch.delenv(SERVE_ENV)
    monkeypatch.setenv("DUALREC_ADMIN_TOKEN", "a-long-enough-admin-token")
    assert_clean_error(invoke("serve", fake_model, "--workers", "2"), "one worker")


def test_incoming_lists_the_products_that_recommend_one(fake_model):
    import numpy as np

    from dualrec.store import open_version

    r = invoke("incoming", fake_model, "Q3", "--k", "3", "--json")
    assert r.exit_code == 0, r.output
    got = [x["id"] for x in json.loads(r.stdout)[0]["results"]]
    s, t = open_version(fake_model).embeddings()
    scores = s @ t[3]
    scores[3] = -np.inf
    assert got == [f"Q{i}" for i in np.argsort(-scores)[:3]]
    r = invoke("incoming", fake_model, "Q3", "--k", "3")
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("Q3  thing 3")
    assert_clean_error(invoke("incoming", fake_model, "NOPE"), "NOPE")


def test_help_lists_choices_and_every_format_option():
    from dualrec.cli import INGEST_OPTIONS
    from dualrec.ingest import FORMATS, options_for

    for fmt in FORMATS:
        listed = INGEST_OPTIONS.split(f"{fmt}: ", 1)[1].split(";")[0] if f"{fmt}: " in INGEST_OPTIONS else ""
        keys = {k.strip() for k in listed.split(",") if k.strip() and k.strip() != "none"} | {"progress"}
        assert keys == set(options_for(fmt)), fmt
    flat = lambda out: " ".join(out.replace("│", " ").split())  # noqa: E731 - rich draws boxes around help
    text = flat(invoke("ingest", "--help").output)
    assert "one of: orders, csv, amazon2014, amazon2018" in text and "min_basket_support" in text
    assert "one of: exact" in flat(invoke("index", "--help").output)
    r = invoke("--version")
    assert r.exit_code == 0 and r.output.startswith("dualrec ")
