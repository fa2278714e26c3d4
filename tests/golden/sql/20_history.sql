-- The archive: raw events by date (and hour for telemetry), and view snapshots.
SELECT date, count(*) AS readings, count(DISTINCT device_id) AS devices
FROM telemetry_history
GROUP BY date
ORDER BY date;

-- A time predicate on ts (also pruned to the matching date/hour partitions).
SELECT date, hour, count(*) AS readings, round(avg(load_kn), 3) AS mean_load_kn
FROM telemetry_history
WHERE ts >= '2026-01-01T10:00:00Z' AND ts < '2026-01-01T13:00:00Z'
GROUP BY date, hour
ORDER BY date, hour;

SELECT count(*) AS readings FROM telemetry_history WHERE date = '2026-01-01' AND hour = 15;

SELECT count(*) AS readings FROM telemetry_history
WHERE ts BETWEEN '2026-01-01T15:00:00Z' AND '2026-01-01T15:59:59.999Z';

SELECT kind, status, count(*) AS events FROM orders_history GROUP BY kind, status ORDER BY kind, status;

SELECT reason, sum(qty_delta) AS qty FROM stock_history GROUP BY reason ORDER BY reason;

-- Live with history: each machine's newest archived reading time equals the live last_seen.
SELECT t.machine_id, max(t.last_seen_ms) = max(h.newest) AS archive_has_newest
FROM tooth_wear t
JOIN (SELECT device_id, max(ts) AS newest FROM telemetry_history GROUP BY device_id) h
  ON h.device_id = t.device_id
GROUP BY t.machine_id
ORDER BY t.machine_id;

-- The snapshot written at the end of the run equals the live view.
SELECT count(*) AS rows_in_snapshot,
       count(*) FILTER (WHERE h.remaining_mm IS NOT DISTINCT FROM t.remaining_mm) AS equal
FROM tooth_wear_history h JOIN tooth_wear t ON t.device_id = h.device_id
WHERE h.as_of = as_of();

SELECT count(*) AS balances FROM inventory_balances_history WHERE as_of = as_of();

-- Reference data is not archived; alerts (an append view) are not snapshotted.
SELECT count(*) FROM assets_history;
