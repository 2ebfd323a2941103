"""Where workers run: local processes (``local``) or the tasks of one Spark job (``spark``)."""
