"""Tests of the seeded synthetic store generator (dualrec.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from dualrec.graph import DualrecError, ProductGraph
from dualrec.synthetic import CATEGORIES, StoreConfig, make_store


@pytest.fixture(scope="module")
def store() -> ProductGraph:
    return make_store(StoreConfig(n_products=20_000, n_categories=30, edges_per_product=10.0, seed=1))


def _edge_kinds(g: ProductGraph):
    p = g.products
    acc = (p["role"] == "accessory").to_numpy()
    cat = p["category_id"].to_numpy()
    s, d = g.cp_src.numpy(), g.cp_dst.numpy()
    same = cat[s] == cat[d]
    return {
        "main_to_acc": same & ~acc[s] & acc[d],
        "acc_to_main": same & acc[s] & ~acc[d],
        "acc_to_acc": same & acc[s] & acc[d],
        "main_to_main": same & ~acc[s] & ~acc[d],
        "cross": ~same,
    }


def test_determinism_same_seed_identical_different_seed_differs():
    a = make_store(n_products=3000, seed=7)
    b = make_store(StoreConfig(n_products=3000, seed=7))
    c = make_store(n_products=3000, seed=8)
    assert a.products.equals(b.products)
    for name in ("cp_src", "cp_dst", "cp_weight", "sim_a", "sim_b", "sim_weight"):
        assert getattr(a, name).equal(getattr(b, name)), name
    assert not a.products["title"].equals(c.products["title"])
    assert a.num_copurchase != c.num_copurchase or not a.cp_src.equal(c.cp_src)


def test_overrides_and_report():
    cfg = StoreConfig(n_products=500, seed=3)
    g = make_store(cfg, noise=0.0)
    assert g.report["source"] == "synthetic"
    assert g.report["config"]["noise"] == 0.0
    assert g.report["config"]["n_products"] == 500
    assert g.report["config"]["seed"] == 3
    assert cfg.noise == 0.05  # the passed config is not mutated
    with pytest.raises(DualrecError, match="unknown StoreConfig field"):
        make_store(n_prodcts=10)
    with pytest.raises(DualrecError):
        make_store(n_products=0)
    with pytest.raises(DualrecError):
        make_store(noise=1.5)


def test_columns_ids_and_prices(store):
    p = store.products
    assert list(p.columns) == ["id", "title", "category", "brand", "price", "role", "category_id"]
    assert store.num_products == 20_000
    assert not p["id"].duplicated().any()
    assert p["id"].str.fullmatch(r"P\d{7}").all()
    assert set(p["role"].unique()) == {"main", "accessory"}
    assert 0.55 < (p["role"] == "accessory").mean() < 0.65
    assert p["category_id"].between(0, 29).all() and p["category_id"].nunique() == 30
    assert (p["price"] > 0).all()
    main = p["role"] == "main"
    assert p.loc[main, "price"].median() > 5 * p.loc[~main, "price"].median()
    # every category's main products are pricier than its accessories
    med = p.groupby(["category_id", "role"])["price"].median().unstack()
    assert (med["main"] > med["accessory"]).all()


def test_titles_and_category_paths_carry_category_and_kind_words(store):
    p = store.products
    for c, sub in p.groupby("category_id"):
        dept, plural, noun, _price, kinds, _specs = CATEGORIES[c % len(CATEGORIES)]
        titles = sub["title"].str.lower()
        assert titles.str.contains(noun, regex=False).all(), noun
        assert sub["category"].str.startswith(f"{dept} > {plural}").all()
        acc = sub["role"] == "accessory"
        # every accessory title names one of the category's accessory kinds
        has_kind = np.zeros(int(acc.sum()), dtype=bool)
        for k in kinds:
            has_kind |= titles[acc].str.contains(f"{noun} {k}", regex=False).to_numpy()
        assert has_kind.all()
        assert (sub.loc[acc, "category"].str.count(" > ") == 2).all()
        assert (sub.loc[~acc, "category"].str.count(" > ") == 1).all()
    # the brand is the first title word
    assert (p["title"].str.split(" ").str[0] == p["brand"]).all()


def test_numbered_categories_beyond_builtin_list():
    n_cat = len(CATEGORIES) + 5
    g = make_store(n_products=4000, n_categories=n_cat, seed=2)
    p = g.products
    extra = p[p["category_id"] == len(CATEGORIES)]  # second copy of CATEGORIES[0]
    dept, plural, noun = CATEGORIES[0][:3]
    assert len(extra) > 0
    assert extra["category"].str.startswith(f"{dept} > {plural} 2").all()
    assert extra["title"].str.contains(f"{noun} 2", regex=False).all()
    # a category name (with its kind) identifies the category id
    main_paths = p[p["role"] == "main"].groupby("category")["category_id"].nunique()
    assert (main_paths == 1).all()


def test_edge_counts_roughly_match_config(store):
    n = store.num_products
    degree = 2 * store.num_copurchase / n
    assert 8.5 <= degree <= 10.0  # 10 drawn per product; duplicate draws are merged
    sim_degree = 2 * store.num_similar / n
    assert 2.6 <= sim_degree <= 3.0
    assert store.report["clean"]["copurchase_self_loops"] == 0
    bigger = make_store(n_products=20_000, n_categories=30, edges_per_product=20.0, seed=1)
    assert 1.8 < bigger.num_copurchase / store.num_copurchase < 2.1


def test_copurchase_structure(store):
    kinds = _edge_kinds(store)
    share = {k: float(v.mean()) for k, v in kinds.items()}
    assert share["main_to_acc"] > 0.7
    assert 0.01 < share["acc_to_main"] < 0.05  # rare reverse edges (reverse_prob=0.03)
    assert 0.08 < share["acc_to_acc"] < 0.2
    assert 0.03 < share["cross"] < 0.08  # noise=0.05
    assert share["main_to_main"] < 0.01
    assert kinds["acc_to_main"].sum() < 0.06 * kinds["main_to_acc"].sum()
    # accessory -> accessory edges join different kinds ("case -> screen protector")
    cat = store.products["category"].to_numpy()
    aa = kinds["acc_to_acc"]
    s, d = store.cp_src.numpy()[aa], store.cp_dst.numpy()[aa]
    assert (cat[s] != cat[d]).mean() > 0.95
    # some, but not many, reciprocal pairs
    recip = store.reciprocal_mask().float().mean().item()
    assert 0.01 < recip < 0.2
    # popularity is skewed: the busiest products have far more edges than the median one
    n = store.num_products
    deg = np.bincount(store.cp_src.numpy(), minlength=n) + np.bincount(store.cp_dst.numpy(), minlength=n)
    assert deg.max() > 10 * np.median(deg)


def test_reverse_prob_and_noise_are_honoured():
    g = make_store(n_products=10_000, n_categories=20, reverse_prob=0.0, noise=0.0, seed=4)
    kinds = _edge_kinds(g)
    assert kinds["acc_to_main"].sum() == 0
    assert kinds["cross"].sum() == 0
    g = make_store(n_products=10_000, n_categories=20, reverse_prob=0.2, seed=4)
    kinds = _edge_kinds(g)
    ratio = kinds["acc_to_main"].sum() / kinds["main_to_acc"].sum()
    assert 0.15 < ratio < 0.25


def test_similarity_pairs_are_substitutes(store):
    p = store.products
    cat = p["category"].to_numpy()  # category path: same category and same role/kind
    a, b = store.sim_a.numpy(), store.sim_b.numpy()
    assert (a < b).all()
    same = cat[a] == cat[b]
    assert same.mean() > 0.9
    role = p["role"].to_numpy()
    cid = p["category_id"].to_numpy()
    assert ((cid[a] == cid[b]) & (role[a] == role[b])).mean() > 0.9


def test_small_and_degenerate_configs_do_not_crash():
    assert make_store(n_products=1).num_copurchase == 0
    g = make_store(n_products=50, n_categories=200)
    assert g.num_products == 50
    g = make_store(n_products=300, accessory_fraction=0.0)
    assert (g.products["role"] == "main").all()
    g = make_store(n_products=300, edges_per_product=0, similar_per_product=0)
    assert g.num_copurchase == 0 and g.num_similar == 0


def test_200k_products_generates():
    g = make_store(n_products=200_000, edges_per_product=10.0, seed=5)
    assert g.num_products == 200_000
    assert 0.85 * 1_000_000 < g.num_copurchase <= 1_000_000
    assert g.products["id"].is_unique
