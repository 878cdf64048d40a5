"""A seeded synthetic store: products with realistic titles and a co-purchase / co-view graph.

Used by the unit tests, the offline demo and the scale benchmarks. Everything is vectorised
numpy (the only Python loops run over the built-in category table), so a 1M-product store
with ~20 co-purchase edges per product is generated in seconds.

The store has the structure a related-product model must learn:

* Every product belongs to one **category** (e.g. "Electronics > Phones") and is either a
  **main** product (a phone) or an **accessory** of one *kind* for that category (a phone
  case, a phone charger, ...).
* **Co-purchase** edges are directed and mostly go *main -> accessory of the same category*
  (buy a phone, then a case). A small ``reverse_prob`` share goes accessory -> main, some
  go accessory -> accessory of another kind in the same category (case -> screen
  protector, part of them reciprocal), and a ``noise`` share joins random products.
  Popularity is heavy-tailed (Pareto weights), so a few products have many edges.
* **Similarity** (co-view) pairs join substitutes: products of the same category and the
  same role/kind (phone A ~ phone B, case X ~ case Y), plus a ``noise`` share of random pairs.

Product metadata columns: ``id`` ("P0000123"), ``title`` (carries the category noun and, for
accessories, the kind words, plus random brand / model / adjective words), ``category``
("Electronics > Phones" or "Electronics > Phones > Cases"), ``brand``, ``price`` (log-normal,
main products pricier than their accessories) and two **ground-truth** columns, ``role``
("main" / "accessory") and ``category_id`` (int). The ground-truth columns exist for tests
and evaluation; a model should not need them (they are recoverable from ``title`` and
``category``), and feature code may drop them.

Edge-count conventions: ``edges_per_product`` is the average co-purchase *degree* (out + in),
so about ``n_products * edges_per_product / 2`` directed edges are drawn; likewise
``similar_per_product`` is the average similarity degree (``n * similar_per_product / 2``
pairs drawn). Duplicate draws are merged by :meth:`ProductGraph.from_edges` (weights are
then the number of draws), so the final counts are slightly below the drawn counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import pandas as pd

from dualrec.graph import DualrecError, ProductGraph

__all__ = ["StoreConfig", "make_store", "CATEGORIES"]


@dataclass
class StoreConfig:
    """Parameters of :func:`make_store` (all counts are approximate targets)."""

    n_products: int = 5000
    #: Categories beyond the built-in table (~40 entries) reuse its names with a number suffix
    #: ("Phones 2"); the default keeps categories a realistic size for the demo.
    n_categories: int = 50
    accessory_fraction: float = 0.6  # share of products that are accessories (rest are main products)
    edges_per_product: float = 10.0  # average co-purchase degree (out + in) per product
    reverse_prob: float = 0.03  # accessory -> main edges, as a share of main -> accessory edges
    similar_per_product: float = 3.0  # average co-view degree (substitutes: same category, same role/kind)
    noise: float = 0.05  # share of co-purchase edges (and of co-view pairs) that join random products
    seed: int = 0
    #: share of the non-noise co-purchase edges that go accessory -> accessory within a category
    accessory_pair_share: float = 0.15
    #: share of the accessory -> accessory edges that also get the reverse edge (reciprocal pairs)
    reciprocal_share: float = 0.3
    #: Pareto shape of the popularity weights (smaller = more skewed; > 1)
    popularity_alpha: float = 2.5


# (department, plural name, title noun, typical main price, accessory kinds, main spec words)
CATEGORIES: list[tuple[str, str, str, float, tuple[str, ...], tuple[str, ...]]] = [
    (
        "Electronics",
        "Phones",
        "phone",
        450,
        ("case", "charger", "screen protector", "power bank"),
        ("64GB", "128GB", "256GB", "512GB"),
    ),
    (
        "Electronics",
        "Laptops",
        "laptop",
        1000,
        ("sleeve", "mouse", "docking station", "cooling pad"),
        ("8GB RAM", "16GB RAM", "32GB RAM"),
    ),
    (
        "Electronics",
        "Tablets",
        "tablet",
        400,
        ("stylus", "keyboard cover", "screen protector"),
        ("10 inch", "11 inch", "13 inch"),
    ),
    ("Electronics", "Cameras", "camera", 800, ("lens", "tripod", "memory card", "bag"), ("24MP", "33MP", "45MP")),
    (
        "Electronics",
        "Headphones",
        "headphone",
        150,
        ("ear pads", "stand", "audio cable"),
        ("wireless", "noise cancelling", "over-ear"),
    ),
    (
        "Electronics",
        "Smartwatches",
        "smartwatch",
        300,
        ("band", "charging dock", "screen protector"),
        ("41mm", "45mm", "49mm"),
    ),
    ("Electronics", "TVs", "tv", 600, ("wall mount", "soundbar", "hdmi cable"), ("43 inch", "55 inch", "65 inch")),
    (
        "Electronics",
        "Game Consoles",
        "game console",
        450,
        ("controller", "headset", "charging station"),
        ("1TB", "2TB", "digital edition"),
    ),
    ("Electronics", "Drones", "drone", 700, ("propellers", "battery", "landing pad"), ("4K", "6K", "mini")),
    ("Electronics", "E-Readers", "e-reader", 130, ("cover", "reading light"), ("6 inch", "7 inch")),
    (
        "Electronics",
        "Printers",
        "printer",
        200,
        ("ink cartridge", "paper pack", "toner"),
        ("inkjet", "laser", "all-in-one"),
    ),
    (
        "Electronics",
        "Monitors",
        "monitor",
        300,
        ("arm", "display cable", "screen cleaner"),
        ("24 inch", "27 inch", "32 inch"),
    ),
    (
        "Electronics",
        "Speakers",
        "speaker",
        200,
        ("stand", "audio cable", "wall bracket"),
        ("portable", "bookshelf", "smart"),
    ),
    ("Electronics", "Routers", "router", 150, ("network cable", "range extender"), ("wifi 6", "wifi 7", "mesh")),
    ("Electronics", "Projectors", "projector", 500, ("screen", "ceiling mount", "remote"), ("1080p", "4K")),
    (
        "Home & Kitchen",
        "Coffee Machines",
        "coffee machine",
        250,
        ("capsules", "milk frother", "descaler"),
        ("15 bar", "19 bar", "automatic"),
    ),
    ("Home & Kitchen", "Blenders", "blender", 120, ("jar", "tamper", "blade assembly"), ("1000W", "1500W")),
    (
        "Home & Kitchen",
        "Vacuum Cleaners",
        "vacuum cleaner",
        250,
        ("bags", "filter", "brush head"),
        ("cordless", "bagless", "robot"),
    ),
    ("Home & Kitchen", "Air Fryers", "air fryer", 100, ("paper liners", "grill rack"), ("4L", "6L", "dual basket")),
    (
        "Home & Kitchen",
        "Stand Mixers",
        "stand mixer",
        350,
        ("mixing bowl", "dough hook", "whisk attachment"),
        ("5L", "6L"),
    ),
    ("Home & Kitchen", "Grills", "grill", 400, ("cover", "brush", "charcoal"), ("gas", "charcoal", "pellet")),
    ("Pets", "Aquariums", "aquarium", 150, ("filter", "heater", "light"), ("60L", "120L", "200L")),
    (
        "Sports & Outdoors",
        "Bicycles",
        "bicycle",
        700,
        ("helmet", "lock", "light", "bottle cage"),
        ("road", "mountain", "city"),
    ),
    (
        "Sports & Outdoors",
        "Tents",
        "tent",
        250,
        ("footprint", "stakes", "lantern"),
        ("2 person", "4 person", "6 person"),
    ),
    (
        "Sports & Outdoors",
        "Running Shoes",
        "running shoe",
        120,
        ("insoles", "laces", "socks"),
        ("trail", "road", "racing"),
    ),
    (
        "Sports & Outdoors",
        "Tennis Rackets",
        "tennis racket",
        180,
        ("grip", "bag", "string set"),
        ("285g", "300g", "315g"),
    ),
    (
        "Sports & Outdoors",
        "Golf Clubs",
        "golf club",
        300,
        ("bag", "grip", "head cover"),
        ("driver", "iron set", "putter"),
    ),
    (
        "Sports & Outdoors",
        "Kayaks",
        "kayak",
        600,
        ("paddle", "spray skirt", "dry bag"),
        ("touring", "sit-on-top", "inflatable"),
    ),
    ("Sports & Outdoors", "Skis", "ski", 500, ("boots", "poles", "goggles"), ("160cm", "170cm", "180cm")),
    (
        "Sports & Outdoors",
        "Fishing Rods",
        "fishing rod",
        90,
        ("reel", "line", "tackle box"),
        ("2.1m", "2.7m", "telescopic"),
    ),
    ("Sports & Outdoors", "Treadmills", "treadmill", 900, ("mat", "lubricant"), ("foldable", "incline")),
    (
        "Musical Instruments",
        "Guitars",
        "guitar",
        450,
        ("strings", "strap", "picks", "tuner"),
        ("acoustic", "electric", "classical"),
    ),
    (
        "Musical Instruments",
        "Digital Pianos",
        "digital piano",
        700,
        ("bench", "sustain pedal", "stand"),
        ("61 key", "88 key"),
    ),
    (
        "Musical Instruments",
        "Drum Kits",
        "drum kit",
        600,
        ("drumsticks", "throne", "cymbal"),
        ("acoustic", "electronic"),
    ),
    ("Musical Instruments", "Violins", "violin", 300, ("rosin", "strings", "shoulder rest"), ("4/4", "3/4")),
    ("Baby", "Strollers", "stroller", 400, ("rain cover", "cup holder", "organizer"), ("travel", "jogging", "double")),
    ("Baby", "Car Seats", "car seat", 250, ("seat protector", "sunshade"), ("infant", "convertible", "booster")),
    (
        "Health & Personal Care",
        "Electric Toothbrushes",
        "electric toothbrush",
        80,
        ("brush heads", "travel case"),
        ("sonic", "oscillating"),
    ),
    (
        "Health & Personal Care",
        "Electric Shavers",
        "electric shaver",
        120,
        ("shaver heads", "cleaning cartridges"),
        ("foil", "rotary"),
    ),
    (
        "Health & Personal Care",
        "Hair Dryers",
        "hair dryer",
        90,
        ("diffuser", "concentrator nozzle"),
        ("ionic", "2000W"),
    ),
    (
        "Tools",
        "Cordless Drills",
        "cordless drill",
        150,
        ("drill bits", "battery", "tool case"),
        ("18V", "20V", "brushless"),
    ),
    (
        "Arts & Crafts",
        "Sewing Machines",
        "sewing machine",
        300,
        ("needles", "thread set", "presser foot"),
        ("mechanical", "computerized"),
    ),
    ("Science", "Telescopes", "telescope", 400, ("eyepiece", "moon filter", "tripod"), ("refractor", "reflector")),
    ("Electronics", "3D Printers", "3d printer", 500, ("filament", "build plate", "nozzle set"), ("FDM", "resin")),
    (
        "Office",
        "Office Chairs",
        "office chair",
        300,
        ("seat cushion", "chair mat", "armrest pads"),
        ("ergonomic", "mesh", "gaming"),
    ),
]

MAIN_BRANDS = (
    "Acme",
    "Novatek",
    "Lumora",
    "Veltrix",
    "Orbis",
    "Kestrel",
    "Halcyon",
    "Quantix",
    "Tessera",
    "Brio",
    "Solano",
    "Auron",
    "Pixalo",
    "Meridia",
    "Corvex",
    "Nimbus",
    "Vireo",
    "Strato",
    "Helix",
    "Zephyra",
    "Altura",
    "Fenwick",
    "Ondina",
    "Rexa",
)
ACCESSORY_BRANDS = (
    "Zento",
    "Gripwell",
    "Fitmate",
    "Casewise",
    "Voltix",
    "Shieldo",
    "Basix",
    "Linkon",
    "Evergear",
    "Snugfit",
    "Trekka",
    "Pacto",
    "Duralite",
    "Clarion",
    "Mosaic",
    "Tidyo",
    "Purely",
    "Kobalt",
    "Nexo",
    "Amberly",
)
ACCESSORY_ADJECTIVES = (
    "slim",
    "premium",
    "universal",
    "compact",
    "heavy duty",
    "travel",
    "pro",
    "eco",
    "ultra",
    "classic",
    "essential",
    "deluxe",
    "magnetic",
    "rugged",
    "lightweight",
)
COLORS = ("black", "white", "grey", "blue", "red", "green", "silver", "pink", "navy", "beige")
MODEL_PREFIXES = ("X", "S", "A", "Z", "M", "Q", "V", "Pro ", "Air ", "Max ", "Neo ", "Ultra ")
BRANDS_PER_CATEGORY = 8
MAX_KINDS = max(len(c[4]) for c in CATEGORIES)


_IRREGULAR_PLURALS = {
    "mouse": "mice",
    "lens": "lenses",
    "charcoal": "charcoal",
    "rosin": "rosin",
    "foot": "feet",
    "stylus": "styluses",
}


def _plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        return f"{head} {_IRREGULAR_PLURALS[last]}".strip()
    if last.endswith("s"):
        return word
    if last.endswith("y") and last[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if last.endswith(("x", "ch", "sh")):
        return word + "es"
    return word + "s"


def _title_case(word: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in word.split(" "))


def _check(cfg: StoreConfig) -> None:
    if int(cfg.n_products) < 1:
        raise DualrecError(f"n_products must be >= 1 (got {cfg.n_products})")
    if int(cfg.n_categories) < 1:
        raise DualrecError(f"n_categories must be >= 1 (got {cfg.n_categories})")
    for name in ("accessory_fraction", "reverse_prob", "noise", "accessory_pair_share", "reciprocal_share"):
        v = getattr(cfg, name)
        if not 0.0 <= v <= 1.0:
            raise DualrecError(f"{name} must be in [0, 1] (got {v})")
    for name in ("edges_per_product", "similar_per_product"):
        if getattr(cfg, name) < 0:
            raise DualrecError(f"{name} must be >= 0 (got {getattr(cfg, name)})")
    if cfg.popularity_alpha <= 1.0:
        raise DualrecError(f"popularity_alpha must be > 1 (got {cfg.popularity_alpha})")


class _Sampler:
    """Popularity-weighted sampling of a product from a contiguous range of groups.

    Popularity weights are small integers ("slots"). Products are sorted by group
    (category-major: main, kind 0, kind 1, ...) and each product is repeated ``slots`` times
    in one flat table, so a uniform integer inside a group's slot range picks a member with
    probability proportional to its weight: one table look-up per draw, millions at once.
    """

    def __init__(self, group: np.ndarray, slots: np.ndarray, n_groups: int, rng: np.random.Generator):
        self.rng = rng
        order = np.argsort(group, kind="stable")
        self.slots = slots
        self.table = np.repeat(order.astype(np.int32 if order.size < 2**31 else np.int64), slots[order])
        cum0 = np.zeros(order.size + 1, dtype=np.int64)
        np.cumsum(slots[order], out=cum0[1:])
        self.first_slot = np.empty(order.size, dtype=np.int64)  # first slot of each product
        self.first_slot[order] = cum0[:-1]
        end = np.cumsum(np.bincount(group, minlength=n_groups))
        self.end = cum0[end]  # slot range [start, end) of each group
        self.start = np.concatenate([[0], self.end[:-1]])
        self.total_slots = int(cum0[-1])

    def pick(self, lo: np.ndarray, hi: np.ndarray, exclude: np.ndarray | None = None):
        """One product per row from slot range [lo, hi); returns (index, ok).

        With ``exclude`` (product indexes inside the range) that product is never picked.
        ``ok`` is false where the range (minus the excluded product) is empty.
        """
        size = np.asarray(hi) - np.asarray(lo)
        if exclude is not None:
            w_ex = self.slots[exclude]
            size = size - w_ex
        ok = size > 0
        u = lo + (self.rng.random(size.size) * np.maximum(size, 0)).astype(np.int64)
        if exclude is not None:
            u += np.where(u >= self.first_slot[exclude], w_ex, 0)
        u = np.minimum(u, self.total_slots - 1)
        return self.table[u].astype(np.int64), ok


def _choice(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """``size`` draws of indexes into ``weights`` (a short array), proportional to weight."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    if size == 0 or cdf[-1] <= 0:
        return np.empty(0, dtype=np.int64)
    out = np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")
    return np.minimum(out, cdf.size - 1)


def make_store(config: StoreConfig | None = None, **overrides) -> ProductGraph:
    """Generate a synthetic store (deterministic for ``config.seed``).

    ``make_store(n_products=1000, seed=3)`` is ``make_store(StoreConfig(n_products=1000, seed=3))``;
    keyword overrides replace fields of ``config`` (or of the default config).
    """
    cfg = config if config is not None else StoreConfig()
    if overrides:
        valid = {f.name for f in fields(StoreConfig)}
        bad = sorted(set(overrides) - valid)
        if bad:
            raise DualrecError(f"unknown StoreConfig field(s) {bad}; valid: {sorted(valid)}")
        cfg = replace(cfg, **overrides)
    _check(cfg)

    rng = np.random.default_rng(cfg.seed)
    n, C, K1 = int(cfg.n_products), int(cfg.n_categories), MAX_KINDS + 1
    B = len(CATEGORIES)

    # ---------------------------------------------------------------- category table (loop over C)
    cat_kinds = np.empty(C, dtype=np.int64)
    cat_price = np.empty(C)
    main_path = np.empty(C, dtype=object)
    main_noun = np.empty(C, dtype=object)
    acc_path = np.empty((C, MAX_KINDS), dtype=object)
    acc_words = np.empty((C, MAX_KINDS), dtype=object)
    n_specs = 4
    spec_words = np.empty((C, n_specs), dtype=object)
    for c in range(C):
        dept, plural, noun, price, kinds, specs = CATEGORIES[c % B]
        suffix = f" {c // B + 1}" if c >= B else ""
        cat_kinds[c] = len(kinds)
        cat_price[c] = price
        main_path[c] = f"{dept} > {plural}{suffix}"
        main_noun[c] = f"{noun}{suffix}"
        for k in range(MAX_KINDS):
            kind = kinds[k % len(kinds)]
            acc_path[c, k] = f"{main_path[c]} > {_title_case(_plural(kind))}"
            acc_words[c, k] = f"{noun}{suffix} {kind}"
        for s in range(n_specs):
            spec_words[c, s] = specs[s % len(specs)]

    # ---------------------------------------------------------------- products
    cat_size_w = rng.lognormal(0.0, 0.4, size=C)
    cat = _choice(rng, cat_size_w, n)
    is_acc = rng.random(n) < cfg.accessory_fraction
    kind = np.where(is_acc, (rng.random(n) * cat_kinds[cat]).astype(np.int64), -1)
    group = cat * K1 + kind + 1  # main -> cat*K1, accessory kind k -> cat*K1 + 1 + k
    # popularity: Pareto(alpha) weights >= 1, quantised to integer slots (4 per unit weight)
    pareto = (1.0 - rng.random(n)) ** (-1.0 / cfg.popularity_alpha)
    slots = np.minimum(np.rint(pareto * 4.0), 1e6).astype(np.int64)

    width = max(7, len(str(n - 1)))
    ids = "P" + pd.Series(np.arange(n)).astype(str).str.zfill(width)

    brand_slot = rng.integers(0, BRANDS_PER_CATEGORY, size=n)
    main_brands = np.asarray(MAIN_BRANDS, dtype=object)
    acc_brands = np.asarray(ACCESSORY_BRANDS, dtype=object)
    brand = np.where(
        is_acc,
        acc_brands[(cat * 5 + brand_slot) % acc_brands.size],
        main_brands[(cat * 7 + brand_slot) % main_brands.size],
    )
    models = np.asarray([f"{p}{i}" for p in MODEL_PREFIXES for i in range(1, 100)], dtype=object)
    adjectives = np.asarray(ACCESSORY_ADJECTIVES, dtype=object)
    colors = np.asarray(COLORS, dtype=object)
    kind0 = np.maximum(kind, 0)
    word = np.where(is_acc, acc_words[cat, kind0], main_noun[cat])
    model = models[rng.integers(0, models.size, size=n)]
    spec = spec_words[cat, rng.integers(0, n_specs, size=n)]
    adj = adjectives[rng.integers(0, adjectives.size, size=n)]
    color = colors[rng.integers(0, colors.size, size=n)]
    tail = np.where(is_acc, adj + " " + color, model + " " + spec)
    title = brand + " " + word + " " + tail
    category = np.where(is_acc, acc_path[cat, kind0], main_path[cat])

    log_price = np.log(cat_price[cat]) + np.where(is_acc, np.log(0.06), 0.0) + rng.normal(0.0, 0.35, size=n)
    price = np.maximum(np.floor(np.exp(log_price)), 1.0) + 0.99

    products = pd.DataFrame(
        {
            "id": ids.to_numpy(),
            "title": title,
            "category": category,
            "brand": brand,
            "price": price.astype(np.float64),
            "role": np.where(is_acc, "accessory", "main"),  # ground truth (tests / evaluation)
            "category_id": cat.astype(np.int64),  # ground truth (tests / evaluation)
        }
    )

    # ---------------------------------------------------------------- co-purchase edges
    S = _Sampler(group, slots, C * K1, rng)
    g0 = np.arange(C) * K1
    main_lo, main_hi = S.start[g0], S.end[g0]
    acc_lo, acc_hi = S.start[g0 + 1], S.end[g0 + MAX_KINDS]
    main_w, acc_w = main_hi - main_lo, acc_hi - acc_lo

    n_edges = int(round(n * cfg.edges_per_product / 2))
    n_noise = int(round(n_edges * cfg.noise))
    n_struct = n_edges - n_noise
    n_aa_total = int(round(n_struct * cfg.accessory_pair_share))
    n_aa = int(round(n_aa_total / (1.0 + cfg.reciprocal_share)))
    n_ma = int(round((n_struct - n_aa_total) / (1.0 + cfg.reverse_prob)))
    n_rev = n_struct - n_aa_total - n_ma
    n_rev_flip = n_rev // 2  # reverse edges that flip a main -> accessory edge (a reciprocal pair)

    srcs, dsts = [], []

    # main -> accessory of the same category (popular mains buy popular accessories)
    c = _choice(rng, main_w * (acc_w > 0), n_ma)
    s, ok_s = S.pick(main_lo[c], main_hi[c])
    d, ok_d = S.pick(acc_lo[c], acc_hi[c])
    ok = ok_s & ok_d
    s, d = s[ok], d[ok]
    srcs.append(s)
    dsts.append(d)

    # rare reverse: accessory -> main (half of them flip an existing main -> accessory edge)
    n_flip = min(n_rev_flip, s.size)
    srcs.append(d[:n_flip])
    dsts.append(s[:n_flip])
    c = _choice(rng, acc_w * (main_w > 0), n_rev - n_flip)
    s, ok_s = S.pick(acc_lo[c], acc_hi[c])
    d, ok_d = S.pick(main_lo[c], main_hi[c])
    ok = ok_s & ok_d
    srcs.append(s[ok])
    dsts.append(d[ok])

    # accessory -> accessory of another kind in the same category, some reciprocal
    c = _choice(rng, acc_w, n_aa)
    s, ok_s = S.pick(acc_lo[c], acc_hi[c])
    other = (kind[s] + 1 + (rng.random(c.size) * (cat_kinds[c] - 1)).astype(np.int64)) % cat_kinds[c]
    g = c * K1 + 1 + other
    d, ok_d = S.pick(S.start[g], S.end[g])
    ok = ok_s & ok_d
    s, d = s[ok], d[ok]
    srcs.append(s)
    dsts.append(d)
    n_recip = int(round(s.size * cfg.reciprocal_share))
    srcs.append(d[:n_recip])
    dsts.append(s[:n_recip])

    # noise: popularity-weighted random pairs (mostly cross-category)
    all_lo, all_hi = np.zeros(n_noise, dtype=np.int64), np.full(n_noise, S.total_slots, dtype=np.int64)
    s, _ = S.pick(all_lo, all_hi)
    d, ok = S.pick(all_lo, all_hi, exclude=s)
    srcs.append(s[ok])
    dsts.append(d[ok])

    cp_src = np.concatenate(srcs)
    cp_dst = np.concatenate(dsts)

    # ---------------------------------------------------------------- similarity (co-view) pairs
    n_sim = int(round(n * cfg.similar_per_product / 2))
    n_sim_noise = int(round(n_sim * cfg.noise))
    n_sim_struct = n_sim - n_sim_noise
    lo0, hi0 = np.zeros(n_sim_struct, dtype=np.int64), np.full(n_sim_struct, S.total_slots, dtype=np.int64)
    a, _ = S.pick(lo0, hi0)
    ga = group[a]
    b, ok = S.pick(S.start[ga], S.end[ga], exclude=a)  # a substitute: same category and role/kind
    sa, sb = [a[ok]], [b[ok]]
    lo0, hi0 = np.zeros(n_sim_noise, dtype=np.int64), np.full(n_sim_noise, S.total_slots, dtype=np.int64)
    a, _ = S.pick(lo0, hi0)
    b, ok = S.pick(lo0, hi0, exclude=a)
    sa.append(a[ok])
    sb.append(b[ok])

    graph, _ = ProductGraph.from_edges(
        products,
        copurchase=(cp_src, cp_dst),
        similar=(np.concatenate(sa), np.concatenate(sb)),
        report={"source": "synthetic", "config": asdict(cfg)},
    )
    return graph


def write_shop_csv(out, n_products: int = 1000, seed: int = 0, customers_per_pair: int = 3) -> dict:
    """A small shop's files, as a shop would export them: ``products.csv`` (id, title, category,
    brand, price) and ``orders.csv`` (order lines: order_id, product_id, customer_id, order_date,
    quantity, unit_price), made from a synthetic store. Each co-purchase ``u -> v`` of the store
    becomes ``customers_per_pair`` customers who order ``u`` and, in a later order, ``v``; each
    co-view pair two orders holding both. For trying ``dualrec ingest --format orders``."""
    from pathlib import Path

    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = make_store(n_products=n_products, seed=seed)
    rng = np.random.default_rng(seed)
    p = g.products
    p[["id", "title", "category", "brand", "price"]].to_csv(out / "products.csv", index=False)
    ids, price = p["id"].to_numpy(), p["price"].to_numpy()
    rows, order, cust = [], 0, 0
    day0 = np.datetime64("2026-01-01T09:00")
    for u, v in zip(g.cp_src.tolist(), g.cp_dst.tolist()):
        for _ in range(customers_per_pair):
            cust += 1
            t = day0 + np.timedelta64(int(rng.integers(0, 300 * 24)), "h")
            for item, when in ((u, t), (v, t + np.timedelta64(int(rng.integers(1, 30 * 24)), "h"))):
                order += 1
                rows.append((f"O{order:07d}", ids[item], f"C{cust:06d}", str(when), 1, price[item]))
    for a, b in zip(g.sim_a.tolist(), g.sim_b.tolist()):
        for _ in range(2):  # bought in the same order twice: a same-basket (similar) pair
            order += 1
            cust += 1
            t = str(day0 + np.timedelta64(int(rng.integers(0, 300 * 24)), "h"))
            rows += [
                (f"O{order:07d}", ids[a], f"C{cust:06d}", t, 1, price[a]),
                (f"O{order:07d}", ids[b], f"C{cust:06d}", t, 1, price[b]),
            ]
    orders = pd.DataFrame(
        rows, columns=["order_id", "product_id", "customer_id", "order_date", "quantity", "unit_price"]
    ).sort_values(["order_date", "order_id"], kind="stable")
    orders.to_csv(out / "orders.csv", index=False)
    return {
        "products": len(p),
        "order_lines": len(orders),
        "orders": int(orders["order_id"].nunique()),
        "customers": cust,
        "folder": str(out),
    }
