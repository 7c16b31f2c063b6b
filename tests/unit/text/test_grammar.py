"""Grammar builders: what llguidance cannot honour in full is an InvalidRequestError naming the field."""

import pytest

from maas.errors import InvalidRequestError
from maas.text import grammar


@pytest.mark.parametrize(
    ("build", "value", "words"),
    [
        (grammar.json_schema_grammar, {"type": "array", "uniqueItems": True}, "uniqueItems"),
        (grammar.json_schema_grammar, {"type": "object", "if": {"type": "string"}}, "if"),
        (grammar.json_schema_grammar, {"type": "integer", "minimum": 3, "maximum": 1}, "Unsatisfiable"),
        (grammar.json_schema_grammar, {"type": "string", "format": "no-such-format"}, "no-such-format"),
        (grammar.json_schema_grammar, "{not json", "not valid JSON"),
        (grammar.json_schema_grammar, [1, 2], "JSON Schema object"),
        (grammar.regex_grammar, "[a-z", "unclosed"),
        (grammar.regex_grammar, "", "non-empty"),
        (grammar.choice_grammar, ["a", ""], "non-empty"),
        (grammar.choice_grammar, "a", "list"),
        (grammar.ebnf_grammar, "root ::= (", "GBNF"),
        (grammar.ebnf_grammar, "start: undefined_rule", "undefined_rule"),
    ],
)
def test_refused_with_the_field_named(build, value, words):
    with pytest.raises(InvalidRequestError) as e:
        build(value, "the_field")
    assert e.value.param == "the_field" and words in e.value.message


def test_valid_grammars_build():
    assert grammar.json_schema_grammar('{"type": "object", "properties": {"a": {"type": "integer"}}}', "f")
    assert grammar.choice_grammar(['say "hi"', "a\\b", "naïve"], "f")
    assert grammar.ebnf_grammar('root ::= "yes" | "no"', "f")
    assert grammar.ebnf_grammar('start: "yes" | "no"', "f")
    assert grammar.json_object_grammar()
