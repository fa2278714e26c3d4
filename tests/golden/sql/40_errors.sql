-- What analysts cannot do, with the SQLSTATE they get.
SELEC 1;

SELECT * FROM no_such_view;

SELECT no_such_column FROM tooth_wear;

SELECT * FROM '/etc/passwd';

COPY tooth_wear TO '/tmp/out.csv';

CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/tmp';

INSERT INTO tooth_wear_history SELECT * FROM tooth_wear_history;

DELETE FROM telemetry_history;

DROP VIEW telemetry_history;

CREATE VIEW stock_history AS SELECT 1;
