"""The run layer: the driver that streams units through workers (a process pool or Dask), locks
the folder, retries, and keeps count. It imports every layer below the readers."""
