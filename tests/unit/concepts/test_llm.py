"""LLM concepts through a loopback server speaking OpenAI's chat-completions format."""

import pytest

from sparse_cbm.concepts.http import RetryPolicy
from sparse_cbm.concepts.llm import PAPER_PROMPTS, ChatClient, llm_concepts, parse_answer
from sparse_cbm.errors import ConceptSourceError
from tests.fake_servers import FakeServer, chat_answer, html_reply, json_reply

KEY = "sk-test-SECRET-0123456789"


@pytest.mark.parametrize("answer, expected", [
    ("1. Fur\n2. Four legs\n3. A wagging tail", ["fur", "four legs", "wagging tail"]),
    ("Here are the features:\n- **Fur**: thick coat\n- Four legs\n* tail\n\nHope this helps!",
     ["fur", "four legs", "tail"]),
    ("1) whiskers\n2) whiskers\n3) Whiskers.", ["whiskers"]),
    ("Fur\nFour legs\nTail\nTail", ["fur", "four legs", "tail"]),
    ("fur, paws, tail, snout", ["fur", "paws", "tail", "snout"]),
    ("Dogs usually have fur, four legs and a tail.", ["fur", "four legs", "tail"]),
    ("A dog is a domesticated mammal that barks.", ["domesticated mammal"]),
    ("A goldfish is a type of freshwater fish.", ["freshwater fish"]),
    ("I'm sorry, but I cannot help with that.", []),
    ("", []),
])
def test_parse_answer(answer, expected):
    assert parse_answer(answer) == expected


def completions(script):
    """Answer by prompt: the first word of the class in the prompt picks the reply."""
    def respond(method, path, body, headers):
        assert path == "/v1/chat/completions" and method == "POST"
        prompt = body["messages"][0]["content"]
        for needle, reply in script.items():
            if needle in prompt:
                return reply(prompt) if callable(reply) else reply
        return json_reply(chat_answer("1. generic thing"))
    return respond


def client(srv, tmp_path, env="FAKE_LLM_KEY", total=2.0):
    return ChatClient(srv.url + "/v1", "fake-model", 0.0, env, tmp_path / "llm",
                      RetryPolicy(total_seconds=total, timeout=2.0, base_delay=0.01))


def test_three_prompts_per_class_and_the_key_goes_only_in_the_header(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_LLM_KEY", KEY)
    script = {"features for recognizing something as a cat/kitten": json_reply(chat_answer("- whiskers\n- fur")),
              "around a cat/kitten": json_reply(chat_answer("sofa, yarn, bowl")),
              "generalization for the word cat/kitten": json_reply(chat_answer("A cat is a small feline."))}
    with FakeServer(completions(script)) as srv:
        rows = llm_concepts(["cat/kitten", "crème brûlée"], client(srv, tmp_path), PAPER_PROMPTS)
    assert [r["concept"] for r in rows if r["class_index"] == 0] == ["whiskers", "fur", "sofa", "yarn", "bowl",
                                                                     "small feline"]
    assert rows[0]["prompt"] == PAPER_PROMPTS["features"].replace("{label}", "cat/kitten")
    assert len(srv.requests) == 6
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in srv.requests)
    assert all(KEY.encode() not in r["body"] for r in srv.requests)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(encoding="utf-8")
    assert KEY not in caplog.text


def test_cached_answers_are_not_asked_again(tmp_path):
    with FakeServer(completions({})) as srv:
        llm_concepts(["dog"], client(srv, tmp_path), PAPER_PROMPTS)
        first = len(srv.requests)
        llm_concepts(["dog"], client(srv, tmp_path), PAPER_PROMPTS)
    assert first == 3 and len(srv.requests) == 3


def test_refused_key_names_the_variable_not_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", KEY)
    with FakeServer(lambda *a: json_reply({"error": {"message": "Incorrect API key"}}, 401)) as srv:
        with pytest.raises(ConceptSourceError) as exc:
            llm_concepts(["dog"], client(srv, tmp_path), PAPER_PROMPTS)
    assert "FAKE_LLM_KEY" in str(exc.value) and "is set" in str(exc.value) and KEY not in str(exc.value)
    assert len(srv.requests) == 1


def test_server_down_names_the_class_and_the_way_out(tmp_path):
    with FakeServer(lambda *a: html_reply(503)) as srv:
        with pytest.raises(ConceptSourceError) as exc:
            llm_concepts(["dog"], client(srv, tmp_path, total=0.05), PAPER_PROMPTS)
    msg = str(exc.value)
    assert "class 'dog'" in msg and "HTTP 503" in msg and "concepts.source: conceptnet or file" in msg
    assert not list((tmp_path / "llm").glob("*.json"))


def test_answers_of_the_wrong_shape_are_retried(tmp_path):
    replies = [json_reply({"choices": []}), json_reply(chat_answer("1. tail\n2. fur"))]
    with FakeServer(lambda *a: replies.pop(0) if len(replies) > 1 else replies[0]) as srv:
        rows = llm_concepts(["dog"], client(srv, tmp_path), {"one": "List features of {label}."})
    assert [r["concept"] for r in rows] == ["tail", "fur"] and len(srv.requests) == 2


def test_answers_without_a_list_or_with_only_duplicates(tmp_path):
    script = {"features": json_reply(chat_answer("Dogs.")), "around": json_reply(chat_answer("- leash\n- Leash\n- leash"))}
    with FakeServer(completions(script)) as srv:
        rows = llm_concepts(["dog"], client(srv, tmp_path), {"features": PAPER_PROMPTS["features"],
                                                             "around": PAPER_PROMPTS["around"]})
    assert [r["concept"] for r in rows] == ["dogs", "leash"]
