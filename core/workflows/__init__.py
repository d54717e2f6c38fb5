"""The workflow engine: DAG definitions and their registry, workflows and jobs, executors.

A DAG (`dag.Dag`) is a named Python definition of steps; a workflow is one user's request
to run a DAG on a dataset or a selection of series; a job is the unit one runner instance
executes. `engine.WorkflowEngine` owns the job state machine and hands jobs to an executor
(`local_executor` by default, `dask_executor` when a Dask scheduler is configured); the job
itself runs in `runner.run_job`, in a process of its own.
"""
