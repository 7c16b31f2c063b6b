import pytest

from maas.errors import InvalidRequestError, ModelFormatError
from maas.text.chat_template import ChatTemplate


def test_default_template_is_chatml_with_generation_prompt():
    out = ChatTemplate(None).render([{"role": "user", "content": "Hi"}])
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_content_parts_are_flattened():
    out = ChatTemplate("{{ messages[0]['content'] }}").render(
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    )
    assert out == "ab"


def test_sandbox_blocks_python_internals():
    t = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(InvalidRequestError):
        t.render([{"role": "user", "content": "x"}])


def test_raise_exception_becomes_a_400():
    t = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(InvalidRequestError, match="roles must alternate"):
        t.render([{"role": "user", "content": "x"}])


def test_broken_template_is_a_model_error():
    with pytest.raises(ModelFormatError):
        ChatTemplate("{% for %}")
