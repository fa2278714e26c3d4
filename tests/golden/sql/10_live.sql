-- Live views: filters, aggregates, joins between views, the snapshot time.
SELECT device_id, machine_id, position, round(remaining_mm, 2) AS remaining_mm, status
FROM tooth_wear
WHERE machine_id = 'M0002' AND remaining_mm < 100
ORDER BY device_id;

SELECT status, count(*) AS teeth, round(avg(wear_pct), 1) AS mean_wear_pct
FROM tooth_wear
GROUP BY status
ORDER BY status;

-- A join of two live views from one snapshot.
SELECT m.machine_id, m.teeth_known, count(t.device_id) AS teeth_in_tooth_wear,
       round(min(t.remaining_mm), 2) = round(m.min_remaining_mm, 2) AS same_minimum
FROM machine_health m JOIN tooth_wear t ON t.machine_id = m.machine_id
GROUP BY m.machine_id, m.teeth_known, m.min_remaining_mm
ORDER BY m.machine_id;

SELECT warehouse, sum(on_hand) AS on_hand, sum(available) AS available
FROM inventory_balances
GROUP BY warehouse
ORDER BY warehouse;

SELECT kind, status, count(*) AS orders FROM orders_open GROUP BY kind, status ORDER BY kind, status;

SELECT as_of() = to_timestamp_millis(last_event_ms) AS as_of_is_last_event, records_bad FROM fleet_kpis;
