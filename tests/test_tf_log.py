"""wmse_tf.tf_log: which processes turn TensorFlow's C++ log off. That a real command's output holds
no line of it: tests/test_train.py::test_the_command_prints_its_own_lines_and_one_progress_line_per_epoch."""

import pytest

from wmse_tf import tf_log


@pytest.mark.parametrize("argv, module", [
    (["python", "-m", "wmse_tf.train", "--flagfile=x"], "wmse_tf.train"),
    (["python", "-u", "-X", "dev", "-mzoo.build", "--all"], "zoo.build"),
    (["python", "-c", "import wmse_tf", "-m"], None),
    (["python", "script.py", "-m", "wmse_tf.train"], None),
    (["python", "-W", "ignore"], None),
])
def test_the_command_module_is_read_from_the_interpreters_arguments(argv, module):
    assert tf_log.command_module(argv) == module


def test_commands_and_their_children_turn_the_log_off_unless_the_user_set_it():
    env = {}
    assert tf_log.quiet(env, ["python", "-m", "wmse_tf.demo"]) and env == {tf_log.VAR: "3", tf_log.MARK: "3"}
    child = dict(env)  # a child process of the command (zoo.build's training runs), whatever it runs
    assert tf_log.quiet(child, ["python", "-c", "..."]) and child == env
    user = {tf_log.VAR: "0"}
    assert not tf_log.quiet(user, ["python", "-m", "zoo.build"]) and user == {tf_log.VAR: "0"}
    user = {tf_log.VAR: "1", tf_log.MARK: "3"}  # a child whose caller changed the level: the user's
    assert not tf_log.quiet(user, ["python", "-m", "wmse_tf.train"]) and user[tf_log.VAR] == "1"
    for argv in (["python", "-m", "pytest"], ["python", "-c", "import wmse_tf"], ["python", "-m", "bench.table1"]):
        env = {}
        assert not tf_log.quiet(env, argv) and env == {}  # a library user's process, pytest, benchmarks
