"""A DAG file with a mistake: Vireo lists it with its error and carries on."""

from core.workflows.dag import Dag, Step

broken = Dag("broken-dag", "never loads", [Step("x", lambda ctx: None)], input="sideways")  # not a DagInput
