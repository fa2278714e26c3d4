-- Named views over live and history tables.
CREATE VIEW worn_teeth AS SELECT device_id, machine_id, wear_pct FROM tooth_wear WHERE wear_pct > 60;

SELECT device_id, round(wear_pct, 1) AS wear_pct FROM worn_teeth ORDER BY device_id;

CREATE OR REPLACE VIEW hourly_readings AS
SELECT date, hour, count(*) AS readings FROM telemetry_history GROUP BY date, hour;

SELECT count(*) AS hours, sum(readings) = (SELECT count(*) FROM telemetry_history) AS all_counted
FROM hourly_readings;

CREATE VIEW worn_teeth AS SELECT 1;

DROP VIEW worn_teeth;

DROP VIEW hourly_readings;

SELECT * FROM worn_teeth;
