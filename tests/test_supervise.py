"""A supervised task survives an exception, which is logged with its traceback."""
import logging

from controller import shim

shim.apply()

from ryu.lib import hub  # noqa: E402

from apps.supervise import supervised  # noqa: E402


def test_an_exception_is_logged_and_the_task_runs_again(caplog):
    runs, done = [], hub.Event()

    def body():
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("injected")
        done.set()
        hub.sleep(60)

    logger = logging.getLogger("vguard-test")
    with caplog.at_level(logging.ERROR, logger="vguard-test"):
        thread = supervised("probe", body, logger, restart_after=0.01)
        assert done.wait(5)
        hub.kill(thread)
    assert runs == [0, 1]
    record = next(r for r in caplog.records if "task probe failed" in r.getMessage())
    assert record.exc_info and "injected" in str(record.exc_info[1])
