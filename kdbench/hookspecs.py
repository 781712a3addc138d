"""Every hook a kdbench plugin can implement.

A plugin is a module (or object) with functions decorated by
``kdbench.hookimpl`` and named as below. Built-in tasks, methods, launchers and loggers
are registered through exactly these hooks, like any third-party package.
"""

import pluggy

hookspec = pluggy.HookspecMarker("kdbench")
hookimpl = pluggy.HookimplMarker("kdbench")


@hookspec
def kdbench_register_tasks():
    """Return a list of :class:`kdbench.Task` subclasses this plugin provides.

    Each class needs a unique ``name`` (how suites refer to it), a ``version``
    (part of every run id: bump it when results would change) and a pydantic
    ``Params`` model that validates the task's ``params:`` in a suite.
    """


@hookspec
def kdbench_register_methods():
    """Return a list of :class:`kdbench.Method` subclasses this plugin provides.

    A method turns a :class:`kdbench.MethodContext` into a list of
    :class:`kdbench.Phase`; the engine does all training, FLOP charging and
    evaluation. ``name``, ``version`` and ``Params`` work as for tasks.
    """


@hookspec
def kdbench_register_launchers():
    """Return a list of :class:`kdbench.launchers.Launcher` subclasses.

    A launcher receives the runs of a suite that are not finished yet and
    executes them (in-process, worker processes, a cluster scheduler...).
    """


@hookspec
def kdbench_register_loggers():
    """Return a list of :class:`kdbench.loggers.Logger` subclasses this plugin provides.

    A logger follows runs in an experiment tracker: kdbench calls ``start`` with
    the run's params, ``log_point`` at every curve point (metrics against steps
    and FLOPs, and the phase) and ``finish`` with the summary. ``name``,
    ``version`` and ``Params`` work as for tasks; ``kdbench run --log NAME`` or a
    suite's ``loggers:`` list chooses it.
    """
