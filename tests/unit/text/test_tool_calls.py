"""Tool-call parsers: a streamed answer gives the same content and calls as the whole answer."""

import pytest

from maas.text.tool_calls import HermesParser, Llama3JsonParser, ToolParser, ToolStream, parser_for_template

CASES = [
    (HermesParser, 'Sure! <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     "Sure!", [("get_weather", '{"city": "Paris"}')]),
    (HermesParser, '<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]</tool_call>',
     None, [("a", "{}"), ("b", '{"x": 1}')]),
    (HermesParser, "no call here <tool", "no call here <tool", []),
    (HermesParser, 'A <tool_call>{"name": "f", "arguments": {"q": "é"}}</tool_call> B', "A  B", [("f", '{"q": "é"}')]),
    (HermesParser, '<tool_call>{"name": "f", "arguments": "{\\"q\\": 1}"}', None, [("f", '{"q": 1}')]),
    (HermesParser, "<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>", []),
    (Llama3JsonParser, '<|python_tag|>{"name": "f", "parameters": {"a": 1}}', None, [("f", '{"a": 1}')]),
    (Llama3JsonParser, '{"name": "f", "parameters": {"a": 1}}; {"name": "g", "parameters": {}}', None,
     [("f", '{"a": 1}'), ("g", "{}")]),
    (Llama3JsonParser, "Hello {x}", "Hello {x}", []),
    (ToolParser, '{"tool_calls": [{"name": "f", "arguments": {"a": [1, 2]}}]}', None, [("f", '{"a": [1, 2]}')]),
    (ToolParser, '{"answer": 42}', '{"answer": 42}', []),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "text", "content", "calls"), CASES)
def test_whole_and_streamed_parse_agree(cls, text, content, calls):
    got_content, got_calls = cls().parse(text)
    assert got_content == content and [(c.name, c.arguments) for c in got_calls] == calls
    for step in (1, 3, 7):  # any split of the stream
        st = ToolStream(cls())
        sent = "".join(st.feed(text[i : i + step]) for i in range(0, len(text), step))
        rest, streamed = st.finish()
        assert (sent + rest or None) == (content or None)
        assert [(c.name, c.arguments) for c in streamed] == calls
        if calls and cls is HermesParser:
            assert "<tool" not in sent  # the marker never leaks as content


def test_the_template_picks_the_parser():
    assert parser_for_template("{{ '<|python_tag|>' }} Environment: ipython").name == "llama3_json"
    assert parser_for_template("{% for tool in tools %}<tool_call>{% endfor %}").name == "hermes"
