"""The use cases the API's routes call: submit and cancel a job or an experiment, and the
tenant's view of what it owns. A route parses the request and shapes the answer; what the
request does happens here, on the base (store, resolve, dispatch, queue), with no HTTP in it.
A refusal is a :mod:`~service.core.usecases.errors` exception the API turns into its answer.

- ``jobs``: :func:`submit_job`, :func:`cancel_job`, :func:`owned_job`, :func:`new_job_record`.
- ``experiments``: :func:`submit_experiment`, :func:`cancel_experiment`,
  :func:`owned_experiment`, :func:`experiment_summary`, :func:`experiment_curves`.
- ``text``: whether a caller's text can be stored (:func:`not_unicode`).
"""
