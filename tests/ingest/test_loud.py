"""Ingest fails loudly on data it cannot use, and says what it kept and dropped."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dualrec.cli import app
from dualrec.errors import DualrecError
from dualrec.ingest import load_source


def _source(tmp_path, products: str, copurchase: str):
    d = tmp_path / "src"
    d.mkdir(exist_ok=True)
    (d / "products.csv").write_text(products)
    (d / "copurchase.csv").write_text(copurchase)
    return d


PRODUCTS = "id,title,price\n" + "".join(f"{i},thing {i},{i}.5\n" for i in range(1, 21))


def test_ids_written_as_floats_are_the_same_products(tmp_path):
    d = _source(tmp_path, PRODUCTS, "src,dst\n1.0,2.0\n2.0,3.0\n3,1\n")
    g, rep = load_source("csv", d, progress=False)
    assert g.num_copurchase == 3 and rep["dropped"]["copurchase_src_not_in_products"] == 0


def test_a_bad_number_keeps_the_column_numeric_and_is_reported(tmp_path):
    products = PRODUCTS.replace("3,thing 3,3.5", "3,thing 3,$12.99").replace("7,thing 7,7.5", "7,thing 7,n/a")
    g, rep = load_source("csv", _source(tmp_path, products, "src,dst\n1,2\n"), progress=False)
    price = g.products.set_index("id")["price"]
    assert pd.api.types.is_float_dtype(price) and price["3"] == pytest.approx(12.99) and np.isnan(price["7"])
    assert rep["bad_numbers"]["price"]["rows"] == [7] and rep["bad_numbers"]["price"]["values"] == ["n/a"]


def test_no_usable_edge_is_an_error_naming_the_reason(tmp_path):
    d = _source(tmp_path, PRODUCTS, "src,dst\nA,B\nC,1\n")
    with pytest.raises(DualrecError, match=r"no usable co-purchase edge.*src not in products: 2 \(e.g. 'A', 'C'\)"):
        load_source("csv", d, progress=False)
    r = CliRunner().invoke(app, ["ingest", "-f", "csv", "-i", str(d), "-o", str(tmp_path / "ds")])
    assert r.exit_code == 2 and "no usable co-purchase edge" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ds").exists()


def test_the_cli_prints_a_summary_and_refuses_a_file_as_output(tmp_path):
    d = _source(tmp_path, PRODUCTS.replace("4,thing 4,4.5", "4,thing 4,oops"), "src,dst\n1,2\n2,3\n2,3\n")
    r = CliRunner().invoke(
        app, ["ingest", "-f", "csv", "-i", str(d), "-o", str(tmp_path / "ds"), "--option", "progress=false"]
    )
    assert r.exit_code == 0, r.output
    assert "kept 20 products, 2 co-purchase edges" in r.output and "copurchase duplicates merged 1" in r.output
    assert "column 'price': 1 value(s)" in r.output and "rows 4" in r.output
    assert json.loads((tmp_path / "ds" / "graph.json").read_text())["report"]["bad_numbers"]["price"]["bad_cells"] == 1
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(app, ["ingest", "-f", "csv", "-i", str(d), "-o", str(tmp_path / "file")])
    assert r.exit_code == 2 and "is a file" in r.output and "Traceback" not in r.output


def test_a_decimal_comma_is_not_read_as_thousands(tmp_path):
    products = PRODUCTS.replace("3,thing 3,3.5", '3,thing 3,"1,299.00"').replace("5,thing 5,5.5", '5,thing 5,"12,50"')
    g, rep = load_source("csv", _source(tmp_path, products, "src,dst\n1,2\n"), progress=False)
    price = g.products.set_index("id")["price"]
    assert price["3"] == 1299.0 and np.isnan(price["5"]) and rep["bad_numbers"]["price"]["values"] == ["12,50"]
