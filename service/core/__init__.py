"""The torch-free base every other part stands on: the job contract, settings (every
``CHILDTUNE_*`` name), the store, the queue, the job directory, process helpers and dataset
file formats. It imports only the standard library, pydantic, redis and celery."""
