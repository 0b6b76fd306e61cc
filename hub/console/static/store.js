// The store page's charts: each zone's temperature or humidity over time, with the limits its rules set drawn as
// dashed lines. Reads /console/stores/<id>/climate.json (downsampled by the hub) and draws with the vendored uPlot.
// No inline script or style (the Content-Security-Policy forbids them): the words come from data- attributes.
(function () {
  "use strict";

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function constant(value, length) {
    var out = new Array(length);
    for (var i = 0; i < length; i++) out[i] = value;
    return out;
  }

  // A zone's box, caption and the element its chart goes in.
  function box(holder, zone) {
    var figure = el("figure", "chart-box");
    figure.setAttribute("data-zone", zone.zone);
    figure.setAttribute("data-quantity", zone.quantity);
    figure.appendChild(el("figcaption", null, zone.zone + " · " + zone.quantity + " (" + zone.unit + ")"));
    var plot = el("div", "chart");
    figure.appendChild(plot);
    holder.appendChild(figure);
    return plot;
  }

  function chart(plot, zone, words, tz) {
    // As wide as its box leaves room for (one column on a phone, two side by side on a desk), measured once every
    // box is in place: the grid lays its columns out by how many there are.
    var width = Math.max(240, plot.clientWidth || 600);
    var t = zone.points.t;
    var data = [t, zone.points.avg, zone.points.min, zone.points.max];
    var series = [
      { label: words.time },
      { label: words.average, stroke: "#1a73e8", width: 2 },
      { label: words.min, stroke: "#9bbcf0", width: 1 },
      { label: words.max, stroke: "#9bbcf0", width: 1 }
    ];
    zone.thresholds.forEach(function (limit) {
      if (limit.low !== null) {
        data.push(constant(limit.low, t.length));
        series.push({ label: words.low + " " + limit.low, stroke: "#c5221f", dash: [6, 4], width: 1, points: { show: false } });
      }
      if (limit.high !== null) {
        data.push(constant(limit.high, t.length));
        series.push({ label: words.high + " " + limit.high, stroke: "#c5221f", dash: [6, 4], width: 1, points: { show: false } });
      }
    });
    // eslint-disable-next-line no-new
    new window.uPlot({
      width: width,
      height: 220,
      series: series,
      tzDate: function (ts) { return window.uPlot.tzDate(new Date(ts * 1e3), tz); },
      axes: [{}, { label: zone.unit }]
    }, data, plot);
  }

  function draw(holder) {
    var words = {
      empty: holder.getAttribute("data-empty"),
      error: holder.getAttribute("data-error"),
      low: holder.getAttribute("data-low"),
      high: holder.getAttribute("data-high"),
      average: holder.getAttribute("data-average"),
      min: holder.getAttribute("data-min"),
      max: holder.getAttribute("data-max"),
      time: holder.getAttribute("data-time")
    };
    var tz = holder.getAttribute("data-tz") || "UTC";
    fetch(holder.getAttribute("data-src"), { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.json();
      })
      .then(function (body) {
        holder.textContent = "";
        if (!body.zones.length) { holder.appendChild(el("p", "muted", words.empty)); return; }
        var plots = body.zones.map(function (zone) { return box(holder, zone); });
        body.zones.forEach(function (zone, i) { chart(plots[i], zone, words, tz); });
        holder.setAttribute("data-drawn", String(body.zones.length));
      })
      .catch(function () {
        holder.textContent = "";
        holder.appendChild(el("p", "error", words.error));
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var holder = document.getElementById("charts");
    if (holder && window.uPlot) draw(holder);
  });
})();
