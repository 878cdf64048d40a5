// dualrec page: search, product view (related → / incoming ←), cold-start form.
// Plain JS, no build step, no external resources. All text goes in via textContent.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const state = { current: null, seq: 0 };

  // -- API -----------------------------------------------------------------------------------------
  function errorMessage(status, body) {
    if (body && body.detail !== undefined) {
      const d = body.detail;
      if (typeof d === "string") return d;
      if (Array.isArray(d)) {  // FastAPI validation errors
        return d.map((e) => ((e.loc || []).filter((x) => x !== "body").join(".") + ": " + e.msg)).join("; ");
      }
      return JSON.stringify(d);
    }
    return "HTTP " + status;
  }

  async function api(path, options) {
    let resp;
    try {
      resp = await fetch(path, options);
    } catch (e) {
      throw new Error("cannot reach the server (" + e.message + ")");
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const err = new Error(errorMessage(resp.status, body));
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  const enc = encodeURIComponent;

  // -- messages ------------------------------------------------------------------------------------
  function showError(msg) {
    const el = $("error");
    el.textContent = msg;
    el.hidden = false;
    el.scrollIntoView({ block: "nearest" });
  }
  function clearError() {
    const el = $("error");
    el.textContent = "";
    el.hidden = true;
  }

  // -- rendering -----------------------------------------------------------------------------------
  function fmtPrice(p) {
    return typeof p === "number" ? p.toFixed(2) : (p == null || p === "" ? null : String(p));
  }

  function itemRow(item, testid) {
    const li = document.createElement("li");
    li.setAttribute("data-testid", testid);
    li.dataset.id = item.id;
    const a = document.createElement("a");
    a.href = "#product=" + enc(item.id);
    a.className = "item-link";
    a.dataset.id = item.id;
    a.setAttribute("data-testid", testid + "-link");
    const title = document.createElement("span");
    title.className = "item-title";
    title.textContent = item.title || item.id;
    a.appendChild(title);
    const sub = document.createElement("span");
    sub.className = "item-sub";
    const bits = [item.id];
    if (item.brand) bits.push(item.brand);
    if (item.category) bits.push(item.category);
    const price = fmtPrice(item.price);
    if (price !== null) bits.push("$" + price);
    sub.textContent = bits.join(" · ");
    a.title = bits.join(" · ");
    a.appendChild(sub);
    if (item.kind || item.reason) {
      // why it is here: a logged co-purchase, or the ranking's strongest evidence
      const why = document.createElement("span");
      why.className = "item-why";
      why.setAttribute("data-testid", testid + "-why");
      if (item.kind) {
        const badge = document.createElement("span");
        badge.className = "badge " + item.kind;
        badge.textContent = item.kind === "logged" ? "bought together" : "predicted";
        why.appendChild(badge);
      }
      if (item.reason) why.appendChild(document.createTextNode(" " + item.reason));
      a.appendChild(why);
    }
    li.appendChild(a);
    if (typeof item.score === "number") {
      const s = document.createElement("span");
      s.className = "score";
      s.title = "score";
      s.textContent = item.score.toFixed(3);
      li.appendChild(s);
    }
    return li;
  }

  function fillList(el, items, testid, emptyText) {
    el.replaceChildren();
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "empty muted";
      li.textContent = emptyText;
      el.appendChild(li);
      return;
    }
    for (const it of items) el.appendChild(itemRow(it, testid));
  }

  function fillMeta(product) {
    const dl = $("product-meta");
    dl.replaceChildren();
    const order = ["category", "brand", "price"];
    const keys = order.filter((k) => k in product)
      .concat(Object.keys(product).filter((k) => !order.includes(k) && k !== "id" && k !== "title"));
    for (const k of keys) {
      const raw = product[k];
      const empty = raw == null || raw === "";
      if (empty && !order.includes(k)) continue;  // other catalogue columns: only when set
      const v = k === "price" && !empty ? "$" + fmtPrice(raw) : raw;
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.dataset.field = k;
      dd.textContent = empty ? "—" : (typeof v === "object" ? JSON.stringify(v) : String(v));
      dl.append(dt, dd);
    }
  }

  function getK() {
    const k = parseInt($("k-input").value, 10);
    return Number.isFinite(k) && k >= 1 && k <= 1000 ? k : 10;
  }

  // -- actions -------------------------------------------------------------------------------------
  async function showProduct(id) {
    const seq = ++state.seq;
    clearError();
    const k = getK();
    const section = $("product");
    section.setAttribute("aria-busy", "true");
    section.dataset.ready = "false";
    try {
      const [product, related, incoming] = await Promise.all([
        api("products/" + enc(id)),
        api("products/" + enc(id) + "/related?explain=true&k=" + k),
        api("products/" + enc(id) + "/incoming?k=" + k),
      ]);
      if (seq !== state.seq) return;  // a newer click won
      state.current = id;
      $("product-title").textContent = product.title || product.id;
      $("product-id").textContent = product.id;
      fillMeta(product);
      fillList($("related-list"), related.results, "related-item", "no related products");
      fillList($("incoming-list"), incoming.results, "incoming-item", "no product recommends this one");
      section.hidden = false;
      section.dataset.id = product.id;
      section.dataset.ready = "true";
      document.title = (product.title || product.id) + " – dualrec";
    } catch (e) {
      if (seq !== state.seq) return;
      showError(e.message);
    } finally {
      if (seq === state.seq) section.removeAttribute("aria-busy");
    }
  }

  async function search(q) {
    clearError();
    const summary = $("search-summary");
    const list = $("search-results");
    list.dataset.ready = "false";
    try {
      const body = await api("search?q=" + enc(q) + "&limit=20");
      fillList(list, body.results, "search-result", "no product matches “" + q + "”");
      summary.textContent = body.total > body.results.length
        ? body.total + " matches, showing the first " + body.results.length
        : body.total + (body.total === 1 ? " match" : " matches");
      summary.hidden = false;
    } catch (e) {
      list.replaceChildren();
      summary.hidden = true;
      showError(e.message);
    } finally {
      list.dataset.ready = "true";
    }
  }

  async function addProduct(form) {
    clearError();
    const status = $("add-status");
    const button = $("add-button");
    const product = { id: $("new-id").value.trim() };
    for (const f of ["title", "category", "brand"]) {
      const v = $("new-" + f).value.trim();
      if (v) product[f] = v;
    }
    const price = $("new-price").value.trim();
    if (price !== "") product.price = Number(price);
    const headers = { "Content-Type": "application/json" };
    const token = $("new-token").value;
    if (token) headers["X-Admin-Token"] = token;
    button.disabled = true;
    status.classList.remove("bad");
    status.textContent = "adding " + product.id + "…";
    try {
      const body = await api("products", { method: "POST", headers, body: JSON.stringify({ products: [product] }) });
      status.textContent = "added " + body.added.join(", ") + " (" + body.num_products + " products now)";
      loadHealth();
      form.reset();
      location.hash = "product=" + enc(body.added[0]);
    } catch (e) {
      status.classList.add("bad");
      status.textContent = "not added: " + e.message;
      showError("could not add " + product.id + ": " + e.message);
    } finally {
      button.disabled = false;
    }
  }

  async function loadHealth() {
    try {
      const h = await api("health");
      const recall = h.index && h.index.recall_at_10 != null
        ? ", recall@10 " + Number(h.index.recall_at_10).toFixed(3) : "";
      $("health").textContent = h.num_products.toLocaleString("en") + " products · index " +
        (h.index ? h.index.kind : "?") + recall + " · model " + h.model_version;
    } catch (e) {
      $("health").textContent = "model status unavailable: " + e.message;
    }
  }

  function route() {
    const m = /^#product=(.+)$/.exec(location.hash);
    if (m) showProduct(decodeURIComponent(m[1]));
  }

  // -- wiring --------------------------------------------------------------------------------------
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("search-input").value.trim();
    if (q) search(q);
  });
  $("add-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    addProduct(ev.currentTarget);
  });
  $("k-input").addEventListener("change", () => { if (state.current) showProduct(state.current); });
  document.addEventListener("click", (ev) => {
    // clicking the same product again (hash unchanged) still reloads it
    const a = ev.target.closest("a.item-link");
    if (a && location.hash === "#product=" + enc(a.dataset.id)) {
      ev.preventDefault();
      showProduct(a.dataset.id);
    }
  });
  window.addEventListener("hashchange", route);
  loadHealth();
  route();
})();
