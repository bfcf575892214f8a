"""The readers: part files as one DuckDB view, the named queries, the report and diff. They
import only :mod:`sweep.store` and :mod:`sweep.core`, never the model, plan or run layers."""
