/* hi */ -- there
  INSERT INTO t VALUES (1)