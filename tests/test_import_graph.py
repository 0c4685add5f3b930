"""The layout holds: pipelines/ and trainer/ meet only in captioner/, and no modules import each other in a circle."""
import pytest

from tests import import_graph


@pytest.fixture(scope="module")
def graph():
    return import_graph.build_graph()


def test_the_walker_sees_the_real_arrows(graph):
    assert "captioner.bundle" in graph["pipelines.caption.captioner_handler"]
    assert "captioner.decoder.search" in graph["captioner.bundle"]
    assert "captioner.decoder.architectures" in import_graph.reachable(graph, "pipelines.caption.captioner_handler")
    assert "trainer.training" in graph["trainer.job"]


def test_no_pipeline_module_reaches_the_trainer(graph):
    pipelines = [m for m in graph if m.split(".")[0] == "pipelines"]
    assert len(pipelines) >= 10
    for module in pipelines:
        reached = import_graph.reachable(graph, module)
        assert not [m for m in reached if m.split(".")[0] in ("trainer", "tools")], module


def test_the_core_imports_neither_side_and_the_trainer_no_pipeline(graph):
    for module in graph:
        top = module.split(".")[0]
        reached = {m.split(".")[0] for m in import_graph.reachable(graph, module)}
        if top == "captioner":
            assert reached <= {"captioner"}, (module, reached)
        if top == "trainer":
            assert reached <= {"captioner", "trainer"}, (module, reached)
    assert import_graph.package_edges(graph) == {"captioner": set(), "pipelines": {"captioner"},
                                                 "trainer": {"captioner"}, "tools": {"captioner"}}


def test_no_import_cycles(graph):
    assert import_graph.cycles(graph) == []


def test_the_walker_catches_an_indirect_import_and_a_cycle(tmp_path):
    """A pipeline that reaches the trainer through the core, inside a function, and two modules in a circle."""
    for path, text in {
        "pipelines/__init__.py": "", "pipelines/job.py": "def run():\n    from captioner import helper\n",
        "captioner/__init__.py": "", "captioner/helper.py": "from trainer.models import build\n",
        "trainer/__init__.py": "", "trainer/models.py": "from . import loop\n", "trainer/loop.py": "import trainer.models\n",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    graph = import_graph.build_graph(str(tmp_path), ("captioner", "pipelines", "trainer"))
    assert "trainer.models" in import_graph.reachable(graph, "pipelines.job")
    assert import_graph.cycles(graph) == [["trainer.loop", "trainer.models"]]
