/* bridge: draws the layer view and the graph view of one model from the JSON embedded in the page.
 *
 * Both views show the same ops; they differ in which modules are folded into one box. Clicking a folded
 * module unfolds it (its ops appear inside a dashed cluster); clicking a cluster's title folds it again. The
 * regions of a control-flow node (a cond's branches, a loop's cond_fn and body_fn) fold and unfold the same way,
 * drawn as shaded clusters.
 * Layout: longest-path layering in topological order, then barycentric ordering sweeps (down, up, down).
 * No network, no libraries: everything the page needs is in the page.
 */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("bridge-data").textContent);
  var CONFIG = JSON.parse(document.getElementById("bridge-config").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var NODES = DATA.nodes, MODULES = DATA.modules;
  var byId = {};
  var moduleOps = {};  // module path -> every op called inside it (at any depth)
  NODES.forEach(function (n, i) {
    n.index = i;
    byId[n.id] = n;
    n.scope.forEach(function (p) { (moduleOps[p] = moduleOps[p] || []).push(n); });
  });
  var moduleSum = {};
  Object.keys(MODULES).forEach(function (p) {
    var s = {ops: 0, flops: 0, macs: 0, params: 0, out: [], iter: false};
    (moduleOps[p] || []).forEach(function (n) {
      if (n.kind !== "op") return;  // a region's inputs
      s.ops += 1;
      // a control-flow node's cost counts its regions' ops: count them only where it is not in the sum too
      if ((n.outer || []).some(function (o) { return byId[o].scope.indexOf(p) >= 0; })) return;
      s.flops += n.flops || 0; s.macs += n.macs || 0; s.params += n.params || 0; s.iter = s.iter || !!n.per_iteration;
    });
    moduleSum[p] = s;
  });
  var feeds = {};  // control-flow node id -> the nodes whose outputs feed its regions' inputs
  DATA.edges.forEach(function (e) {
    var n = byId[e[1]];
    if (n.kind === "input" && n.outer) (feeds[n.outer[n.outer.length - 1]] = feeds[n.outer[n.outer.length - 1]] || []).push(e[0]);
  });
  function label(p) { return MODULES[p].label || p; }  // a module's path; a region's "true_fn of %cond"
  function title(p) { return label(p) + " (" + MODULES[p].type + ")"; }
  function titleWidth(p) { return (title(p).length + 2) * 5.6 + 12; }  // a cluster is as wide as its title
  function perIter(yes) { return yes ? " per iteration" : ""; }  // a loop's cost counts one iteration
  function clusterClass(p) { return MODULES[p].region ? "cluster region" : "cluster"; }
  DATA.edges.forEach(function (e) {  // shapes leaving each module
    var a = byId[e[0]], b = byId[e[1]];
    a.scope.forEach(function (p) {
      if (b.scope.indexOf(p) < 0 && moduleSum[p].out.indexOf(e[3]) < 0) moduleSum[p].out.push(e[3]);
    });
  });

  function human(n) {
    if (n === null || n === undefined) return "?";
    var units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(n) >= units[i][0]) return (n / units[i][0]).toPrecision(3).replace(/\.?0+$/, "") + units[i][1];
    }
    return String(n);
  }
  function el(tag, attrs, parent) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  // ---- one view ---------------------------------------------------------------------------------
  function View(name, svg, expanded) {
    this.name = name;
    this.svg = svg;
    this.expanded = {};
    var self = this;
    expanded.forEach(function (p) { self.expanded[p] = true; });
    this.tx = 0; this.ty = 0; this.k = 1;
    this.viewport = el("g", {"class": "viewport"}, svg);
    this.boxEls = {};
    this.clusterEls = {};
    this.bindPanZoom();
  }

  View.prototype.boxOf = function (n) {  // the box an op is drawn in: itself, or its outermost folded module
    for (var i = 0; i < n.scope.length; i++) if (!this.expanded[n.scope[i]]) return "m:" + n.scope[i];
    return n.id;
  };

  View.prototype.layout = function () {
    var self = this, boxes = {}, list = [];
    NODES.forEach(function (n) {
      var id = self.boxOf(n), b = boxes[id];
      if (!b) {
        b = boxes[id] = {id: id, order: n.kind === "output" ? NODES.length + n.index : n.index, preds: [], succs: []};
        if (id === n.id) {
          b.kind = n.kind; b.node = n; b.clusters = n.scope;
          b.lines = [n.kind === "op" ? n.op : n.name, n.shape];
          if (n.kind === "op") {
            var c = [];
            if (n.params) c.push(human(n.params) + (n.params === 1 ? " param" : " params"));
            if (n.flops !== undefined && n.flops !== null) c.push(human(n.flops) + " FLOPs" + perIter(n.per_iteration));
            if (c.length) b.lines.push(c.join(", "));
          }
        } else {
          var path = id.slice(2), s = moduleSum[path], m = MODULES[path];
          b.kind = "module"; b.path = path; b.clusters = n.scope.slice(0, n.scope.indexOf(path));
          b.lines = ["\u229e " + title(path), s.out.join(", ") || "",
                     s.ops + (s.ops === 1 ? " op" : " ops") + (s.params ? ", " + human(s.params) + " params" : "") +
                     (DATA.has_costs ? ", " + human(s.flops) + " FLOPs" + perIter(s.iter) : "")];
        }
        list.push(b);
      }
    });
    var seen = {};
    var edges = [];
    DATA.edges.forEach(function (e) {
      var a = self.boxOf(byId[e[0]]), b = self.boxOf(byId[e[1]]), key = a + "\u0000" + b;
      if (a === b) return;
      if (seen[key]) { seen[key][2] = seen[key][2] && e[4]; return; }  // a skip if every tensor on it is one
      seen[key] = [boxes[a], boxes[b], e[4]];
      edges.push(seen[key]);
      boxes[a].succs.push(boxes[b]);
      boxes[b].preds.push(boxes[a]);
    });
    list.sort(function (a, b) { return a.order - b.order; });
    // longest-path layering; an edge against topological order (a module called twice) is not followed. What is
    // in a region ranks below every operand of its node's regions, so the regions of a node start side by side.
    var layers = [];
    list.forEach(function (b) {
      var r = 0;
      b.preds.forEach(function (p) { if (p.order < b.order && p.rank + 1 > r) r = p.rank + 1; });
      b.clusters.concat(b.path ? [b.path] : []).forEach(function (p) {
        if (!MODULES[p].region) return;
        (feeds[MODULES[p].node] || []).forEach(function (src) {
          var a = boxes[self.boxOf(byId[src])];
          if (a !== b && a.rank !== undefined && a.rank + 1 > r) r = a.rank + 1;
        });
      });
      b.rank = r;
      (layers[r] = layers[r] || []).push(b);
      b.w = Math.max.apply(null, b.lines.map(function (s) { return s.length; })) * 6.3 + 18;
      b.h = b.lines.length * 13 + 10;
    });
    var y = 0;
    layers.forEach(function (layer) {
      var h = 0;
      layer.forEach(function (b) { if (b.h > h) h = b.h; });
      layer.forEach(function (b) { b.y = y + (h - b.h) / 2; });
      y += h + 34;
      place(layer, layer.map(function (b, i) { return i * 10000; }));
    });
    function bary(b, nbrs) {
      var s = 0, c = 0;
      nbrs.forEach(function (o) { if (o.rank !== b.rank) { s += o.x + o.w / 2; c++; } });
      return c ? s / c : b.x + b.w / 2;
    }
    function place(layer, want) {  // sort by wanted centre, then push apart and re-centre on the wanted mean
      var idx = layer.map(function (b, i) { return i; });
      idx.sort(function (i, j) { return want[i] - want[j] || layer[i].order - layer[j].order; });
      var sorted = idx.map(function (i) { return layer[i]; }), w = idx.map(function (i) { return want[i]; });
      var x = [], drift = 0;
      sorted.forEach(function (b, i) {
        var left = w[i] - b.w / 2;
        if (i > 0) left = Math.max(left, x[i - 1] + sorted[i - 1].w + 16);
        x.push(left);
        drift += left + b.w / 2 - w[i];
      });
      drift /= sorted.length || 1;
      sorted.forEach(function (b, i) { b.x = x[i] - drift; });
      for (var i = 0; i < sorted.length; i++) layer[i] = sorted[i];
    }
    for (var sweep = 0; sweep < 3; sweep++) {
      for (var r = 1; r < layers.length; r++) {
        place(layers[r], layers[r].map(function (b) { return bary(b, b.preds); }));
      }
      if (sweep === 2) break;
      for (r = layers.length - 2; r >= 0; r--) {
        place(layers[r], layers[r].map(function (b) { return bary(b, b.succs); }));
      }
    }
    this.pack(list);
    // clusters: the unfolded modules with something visible inside, as padded bounding boxes, innermost first
    var clusters = {};
    list.forEach(function (b) {
      b.clusters.forEach(function (p) {
        var c = clusters[p] = clusters[p] || {path: p, depth: MODULES[p].depth, x0: 1e18, y0: 1e18, x1: -1e18, y1: -1e18};
        c.x0 = Math.min(c.x0, b.x); c.y0 = Math.min(c.y0, b.y);
        c.x1 = Math.max(c.x1, b.x + b.w); c.y1 = Math.max(c.y1, b.y + b.h);
      });
    });
    var cl = Object.keys(clusters).map(function (p) { return clusters[p]; });
    cl.sort(function (a, b) { return b.depth - a.depth; });
    cl.forEach(function (c) {
      var pad = 8 + 6 * self.deepestBelow(c.path, clusters);
      c.x0 -= pad; c.x1 = Math.max(c.x1 + pad, c.x0 + titleWidth(c.path)); c.y0 -= pad + 12; c.y1 += pad;
      var up = clusters[MODULES[c.path].parent];  // a title that widened it widens its parent too
      if (up && c.path) up.x1 = Math.max(up.x1, c.x1 + 6 - (8 + 6 * self.deepestBelow(up.path, clusters)));
    });
    this.boxes = boxes; this.list = list; this.edges = edges; this.clusters = cl;
  };

  // Clusters kept apart: inside each unfolded cluster (innermost first) its boxes and child clusters (each one
  // block, with its padding) are packed so that no two that share a layer overlap, in the order and about the
  // places the sweeps gave them (the mean of a left-to-right and a right-to-left packing), so two clusters side by
  // side (a cond's branches) never overlap. Blocks on different layers do not constrain each other.
  View.prototype.pack = function (list) {
    var ROOT = "\u0000", kids = {}, inside = {}, seen = {};
    list.forEach(function (b) {
      var parent = ROOT;
      b.clusters.forEach(function (p) {
        if (!seen[p]) { seen[p] = true; (kids[parent] = kids[parent] || []).push(p); }
        (inside[p] = inside[p] || []).push(b);
        parent = p;
      });
      (kids[parent] = kids[parent] || []).push(b);
    });
    function below(p) {  // unfolded levels under a cluster, for its padding
      var most = 0;
      (kids[p] || []).forEach(function (k) { if (typeof k === "string") most = Math.max(most, below(k) + 1); });
      return most;
    }
    function block(p) {  // a packed cluster as one item: its padded extent (and its title's) and layer span
      var items = pack(p), pad = 8 + 6 * below(p), it = {boxes: inside[p], lo: 1e9, hi: -1, x0: 1e18, x1: -1e18};
      items.forEach(function (c) {
        var grow = c.box ? pad : 6;  // a child cluster is a block with its own padding already
        it.lo = Math.min(it.lo, c.lo); it.hi = Math.max(it.hi, c.hi);
        it.x0 = Math.min(it.x0, c.x0 - grow); it.x1 = Math.max(it.x1, c.x1 + grow);
      });
      it.x1 = Math.max(it.x1, it.x0 + titleWidth(p));
      return it;
    }
    function pack(p) {  // the items inside p (boxes and blocks), moved apart where they share a layer
      var items = (kids[p] || []).map(function (k) {
        return typeof k === "string" ? block(k) : {box: k, boxes: [k], lo: k.rank, hi: k.rank, x0: k.x, x1: k.x + k.w};
      });
      if (items.length < 2) return items;
      var order = items.slice().sort(function (a, b) { return (a.x0 + a.x1) - (b.x0 + b.x1); });
      var edge = {}, left = [], i, r;
      order.forEach(function (it) {
        var x = it.x0;
        for (r = it.lo; r <= it.hi; r++) if (edge[r] !== undefined) x = Math.max(x, edge[r] + 16);
        for (r = it.lo; r <= it.hi; r++) edge[r] = x + it.x1 - it.x0;
        left.push(x);
      });
      edge = {};
      for (i = order.length - 1; i >= 0; i--) {
        var it = order[i], x1 = it.x1;
        for (r = it.lo; r <= it.hi; r++) if (edge[r] !== undefined) x1 = Math.min(x1, edge[r] - 16);
        for (r = it.lo; r <= it.hi; r++) edge[r] = x1 - (it.x1 - it.x0);
        var dx = (left[i] + x1 - (it.x1 - it.x0)) / 2 - it.x0;
        if (dx) {
          it.boxes.forEach(function (b) { b.x += dx; });
          it.x0 += dx; it.x1 += dx;
        }
      }
      return items;
    }
    pack(ROOT);
  };

  View.prototype.deepestBelow = function (path, clusters) {  // unfolded levels under a cluster, for padding
    var d = MODULES[path].depth, most = 0;
    for (var p in clusters) {
      if (isAncestor(path, p)) most = Math.max(most, MODULES[p].depth - d);
    }
    return most;
  };
  function isAncestor(a, p) {
    for (var q = MODULES[p].parent; q; q = MODULES[q].parent) if (q === a) return true;
    return false;
  }

  View.prototype.render = function () {
    this.layout();
    var self = this, vp = this.viewport;
    while (vp.firstChild) vp.removeChild(vp.firstChild);
    this.boxEls = {}; this.clusterEls = {};
    // what is drawn, in layout units, for fit and the start view (getBBox would count text at its rendered size,
    // which browsers keep legible: a graph zoomed far out measures bigger than it is)
    var bb = this.bb = {x0: 1e18, y0: 1e18, x1: -1e18, y1: -1e18};
    function grow(x0, y0, x1, y1) {
      bb.x0 = Math.min(bb.x0, x0); bb.y0 = Math.min(bb.y0, y0); bb.x1 = Math.max(bb.x1, x1); bb.y1 = Math.max(bb.y1, y1);
    }
    this.clusters.forEach(function (c) {
      grow(c.x0, c.y0, c.x1, c.y1);
      var g = el("g", {"class": clusterClass(c.path), "data-path": c.path}, vp);
      el("rect", {x: c.x0, y: c.y0, width: c.x1 - c.x0, height: c.y1 - c.y0, rx: 6}, g);
      var t = el("text", {x: c.x0 + 6, y: c.y0 + 12}, g);
      t.textContent = "\u229f " + title(c.path);
      t.setAttribute("class", "cluster-title");
      t.addEventListener("click", function (ev) { ev.stopPropagation(); self.collapse(c.path); });
      self.clusterEls[c.path] = g;
    });
    var eg = el("g", {"class": "edges"}, vp);
    this.edges.forEach(function (e) {
      var a = e[0], b = e[1], x1 = a.x + a.w / 2, y1 = a.y + a.h, x2 = b.x + b.w / 2, y2 = b.y;
      var back = y2 <= y1;  // against the layering: loop around
      var dy = back ? 60 : Math.max(20, (y2 - y1) / 2);
      // a long edge between boxes in one column (a skip over a chain) bows out instead of running behind them
      var bow = b.rank - a.rank > 1 && Math.abs(x2 - x1) < Math.max(a.w, b.w) / 2 ? Math.max(a.w, b.w) / 2 + 30 : 0;
      grow(Math.min(x1, x2), Math.min(y1, y2 - dy), Math.max(x1, x2) + bow, Math.max(y2, y1 + dy));  // its hull
      el("path", {"class": e[2] ? "edge skip" : "edge", "marker-end": "url(#arrow-" + self.name + ")",
                  d: "M" + x1 + "," + y1 + " C" + (x1 + bow) + "," + (y1 + dy) + " " + (x2 + bow) + "," + (y2 - dy) +
                     " " + x2 + "," + y2}, eg);
    });
    this.list.forEach(function (b) {
      grow(b.x, b.y, b.x + b.w, b.y + b.h);
      var g = el("g", {"class": "node " + b.kind + (b.path && MODULES[b.path].region ? " region" : ""), "data-id": b.id,
                       transform: "translate(" + b.x + "," + b.y + ")"}, vp);
      if (b.node) g.setAttribute("data-op", b.node.op);
      el("rect", {width: b.w, height: b.h, rx: b.kind === "op" || b.kind === "module" ? 4 : 12}, g);
      b.lines.forEach(function (s, i) {
        var t = el("text", {x: b.w / 2, y: 17 + 13 * i, "text-anchor": "middle"}, g);
        if (i > 0) t.setAttribute("class", "sub");
        t.textContent = s;
      });
      g.addEventListener("click", function (ev) {
        ev.stopPropagation();
        if (b.kind === "module") {
          self.expand(b.path);
          App.select({module: b.path});
        } else {
          App.select({node: b.id});
        }
      });
      self.boxEls[b.id] = g;
    });
    this.mark();
  };

  View.prototype.expand = function (path) { this.expanded[path] = true; this.render(); };
  View.prototype.collapse = function (path) {
    var self = this;
    Object.keys(this.expanded).forEach(function (p) {
      if (p === path || isAncestor(path, p)) delete self.expanded[p];
    });
    this.render();
  };
  View.prototype.setAll = function (open) {
    var self = this;
    this.expanded = {};
    if (open) Object.keys(MODULES).forEach(function (p) { self.expanded[p] = true; });
    this.render();
    this.home();
  };
  View.prototype.reveal = function (n) {  // unfold every module around an op
    var self = this, changed = false;
    n.scope.forEach(function (p) { if (!self.expanded[p]) { self.expanded[p] = true; changed = true; } });
    if (changed) this.render();
  };

  View.prototype.mark = function () {  // selection and search matches
    var self = this, sel = App.selection;
    Object.keys(this.boxEls).forEach(function (id) {
      var g = self.boxEls[id], cls = g.getAttribute("class").replace(/ (selected|match)/g, "");
      g.setAttribute("class", cls);
    });
    Object.keys(this.clusterEls).forEach(function (p) { self.clusterEls[p].setAttribute("class", clusterClass(p)); });
    App.matches.forEach(function (n) {
      var g = self.boxEls[self.boxOf(n)];
      if (g) g.setAttribute("class", g.getAttribute("class") + " match");
    });
    if (!sel) return;
    if (sel.node) {
      var g = this.boxEls[this.boxOf(byId[sel.node])];
      if (g) g.setAttribute("class", g.getAttribute("class") + " selected");
    } else if (this.clusterEls[sel.module]) {
      this.clusterEls[sel.module].setAttribute("class", clusterClass(sel.module) + " selected");
    } else {
      var ops = moduleOps[sel.module] || [];
      var box = ops.length ? this.boxEls[this.boxOf(ops[0])] : null;
      if (box) box.setAttribute("class", box.getAttribute("class") + " selected");
    }
  };

  // ---- pan and zoom -----------------------------------------------------------------------------
  View.prototype.apply = function () {
    this.viewport.setAttribute("transform", "translate(" + this.tx + "," + this.ty + ") scale(" + this.k + ")");
    var z = document.getElementById(this.name + "-zoom");
    if (z) z.textContent = Math.round(this.k * 100) + "%";
  };
  View.prototype.extent = function () {  // what is drawn, as {x, y, width, height} in layout units
    var b = this.bb;
    return b && b.x1 > b.x0 ? {x: b.x0, y: b.y0, width: b.x1 - b.x0, height: b.y1 - b.y0} : {width: 0};
  };
  View.prototype.fitScale = function (r, bb) {  // the zoom that shows the whole graph, with 20 px around it
    return Math.max(1e-4, Math.min((r.width - 40) / bb.width, (r.height - 40) / bb.height, 1.5));
  };
  View.prototype.fit = function () {  // the whole graph (the overview): the "fit" button, or the f key
    var r = this.svg.getBoundingClientRect(), bb = this.extent();
    if (!bb.width || !r.width) return;
    this.k = this.fitScale(r, bb);
    this.tx = (r.width - bb.width * this.k) / 2 - bb.x * this.k;
    this.ty = 20 - bb.y * this.k;
    this.apply();
  };
  // The start view (and the h key): the whole graph while its box labels stay FIT_LABEL_PX or more on screen (a
  // small graph, as before); a bigger one opens at its inputs with labels of START_LABEL_PX, readable, as Netron
  // opens a big model at its top. "fit" (or f) is the overview.
  var FIT_LABEL_PX = 6, START_LABEL_PX = 10;
  View.prototype.home = function () {
    var r = this.svg.getBoundingClientRect(), bb = this.extent();
    if (!bb.width || !r.width) return;
    var label = this.viewport.querySelector(".node text");
    var px = label ? parseFloat(window.getComputedStyle(label).fontSize) || 11 : 11;
    if (this.fitScale(r, bb) * px >= FIT_LABEL_PX) { this.fit(); return; }
    var k = this.k = START_LABEL_PX / px;
    var first = this.list.filter(function (b) { return b.rank === 0; }), cx = 0;
    first.forEach(function (b) { cx += b.x + b.w / 2; });
    cx = first.length ? cx / first.length : bb.x + bb.width / 2;
    // centred on the inputs, without showing more than a margin beyond either side of the graph
    var tx = r.width / 2 - cx * k, left = 20 - bb.x * k, right = r.width - 20 - (bb.x + bb.width) * k;
    this.tx = bb.width * k + 40 <= r.width ? (r.width - bb.width * k) / 2 - bb.x * k : Math.max(right, Math.min(left, tx));
    this.ty = 20 - bb.y * k;
    this.apply();
  };
  View.prototype.centerOn = function (id) {
    var b = this.boxes[id];
    if (!b) return;
    var r = this.svg.getBoundingClientRect();
    if (this.k < 0.6) this.k = 0.9;
    this.tx = r.width / 2 - (b.x + b.w / 2) * this.k;
    this.ty = r.height / 2 - (b.y + b.h / 2) * this.k;
    this.apply();
  };
  View.prototype.bindPanZoom = function () {
    var self = this, svg = this.svg, drag = null;
    svg.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var r = svg.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
      var f = Math.exp(-ev.deltaY * 0.0015), k = Math.min(8, Math.max(Math.min(0.02, self.k), self.k * f));
      self.tx = mx - (mx - self.tx) * (k / self.k);
      self.ty = my - (my - self.ty) * (k / self.k);
      self.k = k;
      self.apply();
    }, {passive: false});
    svg.addEventListener("mousedown", function (ev) {
      drag = {x: ev.clientX, y: ev.clientY, tx: self.tx, ty: self.ty};
      svg.classList.add("dragging");
    });
    window.addEventListener("mousemove", function (ev) {
      if (!drag) return;
      self.tx = drag.tx + ev.clientX - drag.x;
      self.ty = drag.ty + ev.clientY - drag.y;
      self.apply();
    });
    window.addEventListener("mouseup", function () { drag = null; svg.classList.remove("dragging"); });
  };

  // ---- the page ---------------------------------------------------------------------------------
  var App = window.bridgeApp = {selection: null, matches: [], views: {}};

  App.select = function (sel) {
    App.selection = sel;
    App.showPanel(sel);
    Object.keys(App.views).forEach(function (k) { App.views[k].mark(); });
  };

  function row(dl, label, field, value) {
    var dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = label;
    dd.textContent = value;
    dd.setAttribute("data-field", field);
    dl.appendChild(dt); dl.appendChild(dd);
  }
  function num(n) { return n === null || n === undefined ? "?" : n.toLocaleString("en-US") + " (" + human(n) + ")"; }

  App.showPanel = function (sel) {
    var panel = document.getElementById("panel");
    while (panel.firstChild) panel.removeChild(panel.firstChild);
    var h = document.createElement("h3"), dl = document.createElement("dl");
    panel.appendChild(h); panel.appendChild(dl);
    if (sel.node) {
      var n = byId[sel.node];
      h.textContent = (n.kind === "op" ? "%" : "") + n.name;
      row(dl, "kind", "kind", n.kind);
      row(dl, "op", "op", n.op);
      row(dl, "shape", "shape", n.shape);
      if (n.kind === "op") {
        var last = n.scope[n.scope.length - 1];
        row(dl, "module", "module", last ? title(last) : "<root>");
        if (n.regions) row(dl, "regions", "regions", n.regions.map(function (r) { return MODULES[r].region; }).join(", "));
        if (DATA.has_costs) {
          row(dl, "params", "params", num(n.params));
          row(dl, "FLOPs", "flops", num(n.flops) + perIter(n.per_iteration));
          row(dl, "MACs", "macs", num(n.macs));
          row(dl, "output bytes", "out_bytes", num(n.out_bytes));
        }
        row(dl, "source", "source", n.source || "?");
      }
      var ins = DATA.edges.filter(function (e) { return e[1] === n.id; }).map(function (e) { return "%" + e[2] + " " + e[3]; });
      var outs = DATA.edges.filter(function (e) { return e[0] === n.id; }).map(function (e) { return byId[e[1]].name; });
      row(dl, "inputs", "inputs", ins.join("; ") || "-");
      row(dl, "used by", "users", outs.join(", ") || "-");
    } else {
      var p = sel.module, m = MODULES[p], s = moduleSum[p];
      h.textContent = label(p);
      row(dl, "kind", "kind", m.region ? "region" : "module");
      row(dl, "type", "type", m.type);
      if (m.region) row(dl, "of", "node", "%" + byId[m.node].name);
      row(dl, "ops", "ops", String(s.ops));
      row(dl, "output shape", "shape", s.out.join(", ") || "-");
      if (DATA.has_costs) {
        row(dl, "params", "params", num(s.params));
        row(dl, "FLOPs", "flops", num(s.flops) + perIter(s.iter));
        row(dl, "MACs", "macs", num(s.macs));
      }
      ["layer", "graph"].forEach(function (k) {
        var b = document.createElement("button"), v = App.views[k];
        b.textContent = (v.expanded[p] ? "fold" : "unfold") + " in " + k + " view";
        b.addEventListener("click", function () {
          if (v.expanded[p]) v.collapse(p); else v.expand(p);
          App.select(sel);
        });
        panel.appendChild(b);
        panel.appendChild(document.createTextNode(" "));
      });
    }
  };

  App.search = function (q) {
    q = q.trim().toLowerCase();
    var list = document.getElementById("search-results");
    while (list.firstChild) list.removeChild(list.firstChild);
    App.matches = !q ? [] : NODES.filter(function (n) {
      var last = n.scope[n.scope.length - 1] || "";
      return (n.name + " " + n.op + " " + (last ? title(last) : "")).toLowerCase().indexOf(q) >= 0;
    });
    document.getElementById("search-count").textContent = q ? App.matches.length + " found" : "";
    App.matches.slice(0, 50).forEach(function (n) {
      var li = document.createElement("li"), small = document.createElement("small");
      li.textContent = n.name;
      small.textContent = n.op + (n.scope.length ? " \u00b7 " + label(n.scope[n.scope.length - 1]) : "");
      li.appendChild(small);
      li.setAttribute("data-id", n.id);
      li.addEventListener("click", function () { App.go(n); });
      list.appendChild(li);
    });
    Object.keys(App.views).forEach(function (k) { App.views[k].mark(); });
  };
  App.go = function (n) {  // show an op: unfold its modules in the graph view, select it, centre on it
    var g = App.views.graph;
    g.reveal(n);
    App.select({node: n.id});
    g.centerOn(n.id);
    App.views.layer.centerOn(App.views.layer.boxOf(n));
    document.getElementById("search-results").textContent = "";
  };

  function start() {
    App.views.layer = new View("layer", document.getElementById("layer-svg"), CONFIG.layer_expanded);
    App.views.graph = new View("graph", document.getElementById("graph-svg"), CONFIG.graph_expanded);
    Object.keys(App.views).forEach(function (k) {
      var v = App.views[k];
      v.render();
      v.home();
      document.getElementById(k + "-fit").addEventListener("click", function () { v.fit(); });
      document.getElementById(k + "-open").addEventListener("click", function () { v.setAll(true); });
      document.getElementById(k + "-close").addEventListener("click", function () { v.setAll(false); });
    });
    var box = document.getElementById("search");
    box.addEventListener("input", function () { App.search(box.value); });
    box.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && App.matches.length) App.go(App.matches[0]);
      if (ev.key === "Escape") { box.value = ""; App.search(""); }
    });
    document.addEventListener("keydown", function (ev) {  // f: fit both views; h: back to the start view
      if (ev.target === box || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      var act = {f: "fit", h: "home", Home: "home"}[ev.key];
      if (act) Object.keys(App.views).forEach(function (k) { App.views[k][act](); });
    });
    document.body.setAttribute("data-ready", "1");
  }
  start();
})();
