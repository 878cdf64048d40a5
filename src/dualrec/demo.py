"""`dualrec demo`: a synthetic store end to end, offline, in about a minute on 2 cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer

from dualrec.baselines import Popularity
from dualrec.evaluate import RankingEvaluator, direction_accuracy
from dualrec.graph import ProductGraph
from dualrec.pipeline import evaluate_model, train_dataset
from dualrec.retrieval import Recommender
from dualrec.split import TEST, TRAIN
from dualrec.store import open_version
from dualrec.synthetic import make_store
from dualrec.train import TrainConfig, evaluate_embeddings


def run_demo(out: Path, n_products: int = 5000, epochs: int = 30, seed: int = 0) -> dict:
    out = Path(out)
    echo = typer.echo
    echo(f"1/4  generating a synthetic store of {n_products} products (seed {seed})")
    graph = make_store(n_products=n_products, seed=seed)
    dataset = graph.save(out / "dataset")
    s = graph.summary()
    echo(
        f"     {s['products']} products, {s['copurchase_edges']} co-purchase edges "
        f"({s['reciprocal_copurchase_edges']} reciprocal), {s['similar_pairs']} co-view pairs -> {dataset}"
    )

    echo("2/4  encoding product text with MiniLM (cached in the dataset folder) and training DAEMON")
    cfg = TrainConfig(epochs=epochs, seed=seed)
    res = train_dataset(dataset, out / "model", cfg, log=lambda m: echo("     " + m))

    echo("3/4  test metrics (held-out co-purchase edges, all products ranked)")
    graph = ProductGraph.load(dataset)
    test = res.split.mask(TEST)
    train = res.split.mask(TRAIN)
    src, dst = graph.cp_src[test], graph.cp_dst[test]
    daemon = evaluate_embeddings(graph, res.split, res.source, res.target, TEST)
    pop = Popularity().fit(graph, train)
    popm = RankingEvaluator(graph.num_products).eval(pop.score_fn, src, dst, graph.cp_src[train], graph.cp_dst[train])
    one_way = ~graph.reciprocal_mask(src, dst)
    popm["direction_accuracy"] = direction_accuracy(pop.pair_score_fn, src[one_way], dst[one_way])
    role = graph.products["role"].to_numpy()
    m2a = torch.as_tensor((role[src.numpy()] == "main") & (role[dst.numpy()] == "accessory")) & one_way
    acc_m2a = direction_accuracy(lambda u, v: (res.source[u] * res.target[v]).sum(-1), src[m2a], dst[m2a])
    rows = [("DAEMON", daemon), ("popularity", popm)]
    two = None
    if open_version(out / "model", verify=False).has_reranker:  # dualrec's default: DAEMON + the second stage
        two = evaluate_model(out / "model", "test", progress=False)
        rows.insert(0, ("two-stage", two))
    echo(f"     {'method':<12}{'HR@5':>8}{'HR@10':>8}{'HR@20':>8}{'MRR@10':>8}{'dir-acc':>9}")
    for name, m in rows:
        echo(
            f"     {name:<12}{m['HitRate@5']:8.4f}{m['HitRate@10']:8.4f}{m['HitRate@20']:8.4f}"
            f"{m['MRR@10']:8.4f}{m['direction_accuracy']:9.3f}"
        )
    echo(f"     direction accuracy on main -> accessory test edges: {acc_m2a:.3f} ({int(m2a.sum())} edges)")

    echo("4/4  recommendations (direction matters: a phone recommends its case, a case less so the phone)")
    rec = Recommender.load(out / "model")
    deg = torch.bincount(graph.cp_src[train], minlength=graph.num_products).numpy()
    products = graph.products
    for r in ("main", "accessory"):
        cand = np.nonzero((role == r) & (deg > 0))[0]
        q = products["id"].iloc[int(cand[np.argmax(deg[cand])])]
        rr = rec.recommend([q], k=5)[0]
        echo(f"     {q} [{r}] {products.set_index('id').loc[q, 'title']}")
        meta = products.set_index("id")
        for i, (pid, sc) in enumerate(zip(rr.ids, rr.scores), 1):
            echo(f"        {i}. {pid} [{meta.loc[pid, 'role']:<9}] {sc:+.3f}  {meta.loc[pid, 'title']}")
    echo(f"model in {out / 'model'}; try: dualrec recommend {out / 'model'} {q}")
    return {"daemon": daemon, "two_stage": two, "popularity": popm, "direction_accuracy_main_to_accessory": acc_m2a}
