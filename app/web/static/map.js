/* The console's maps (Leaflet). A map is a <div data-map> with its data in attributes:
 * data-lat/data-lon/data-zoom (view), data-markers (JSON: [{lat, lon, label, kind, radius}]),
 * data-tiles/data-attribution (tile server), and for picking a point, data-pick-lat and
 * data-pick-lon (ids of the labelled inputs that a click fills in; typing in them moves
 * the pin too, so the map is never the only way; data-pick-shown shows the typed point at once). Without tiles the map stays blank but
 * markers, clicks and the radius still work. */
(function () {
  "use strict";
  var STYLES = {
    incident: { radius: 9, color: "#8a1c1c", fillColor: "#d62828", fillOpacity: 1, weight: 2 },
    aed: { radius: 7, color: "#1d6b2c", fillColor: "#2a9d3f", fillOpacity: 1, weight: 2 },
    place: { radius: 7, color: "#0b4f9c", fillColor: "#3a7bd5", fillOpacity: 1, weight: 2 },
    pin: { radius: 9, color: "#1a1a1a", fillColor: "#ffbf47", fillOpacity: 1, weight: 3 }
  };

  function init(element) {
    var data = element.dataset;
    var map = L.map(element, { scrollWheelZoom: false });
    L.tileLayer(data.tiles, { attribution: data.attribution, maxZoom: 19 }).addTo(map);
    map.setView([parseFloat(data.lat), parseFloat(data.lon)], parseInt(data.zoom || "15", 10));
    var markers = JSON.parse(data.markers || "[]");
    var bounds = [];
    markers.forEach(function (marker) {
      var at = [marker.lat, marker.lon];
      if (marker.radius) {
        L.circle(at, { radius: marker.radius, color: "#8a1c1c", weight: 1, fillOpacity: 0.05 }).addTo(map);
      }
      L.circleMarker(at, STYLES[marker.kind] || STYLES.place).bindTooltip(marker.label).addTo(map);
      bounds.push(at);
    });
    if (bounds.length > 1 && data.fit !== undefined) {
      map.fitBounds(bounds, { padding: [30, 30], maxZoom: 16 });
    }
    if (data.pickLat && data.pickLon) {
      pick(map, document.getElementById(data.pickLat), document.getElementById(data.pickLon));
    }
  }

  function pick(map, latInput, lonInput) {
    var pin = null;
    function place(lat, lon) {
      if (pin === null) {
        pin = L.circleMarker([lat, lon], STYLES.pin).addTo(map);
      } else {
        pin.setLatLng([lat, lon]);
      }
    }
    function fromInputs() {
      var lat = parseFloat(latInput.value), lon = parseFloat(lonInput.value);
      if (isFinite(lat) && isFinite(lon)) { place(lat, lon); }
    }
    map.on("click", function (event) {
      latInput.value = event.latlng.lat.toFixed(6);
      lonInput.value = event.latlng.lng.toFixed(6);
      place(event.latlng.lat, event.latlng.lng);
      latInput.dispatchEvent(new Event("change", { bubbles: true }));
    });
    latInput.addEventListener("input", fromInputs);
    lonInput.addEventListener("input", fromInputs);
    if (map.getContainer().dataset.pickShown !== undefined) { fromInputs(); }
  }

  document.querySelectorAll("[data-map]").forEach(init);
})();
