"""Structured outputs through the official client against a real server: every answer validates."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from enum import StrEnum
from typing import Annotated, Literal

import httpx
import pytest
from pydantic import BaseModel, Field

from tests.integration.conftest import MODEL

Name = Annotated[str, Field(min_length=1, max_length=24)]
Short = Annotated[str, Field(max_length=40)]


class Color(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Person(BaseModel):
    name: Name
    age: Annotated[int, Field(ge=0, le=120)]


class City(BaseModel):
    name: Name
    country: Name
    population_millions: Annotated[float, Field(ge=0, le=40, multiple_of=0.1)]  # else 11.1111... forever


class Address(BaseModel):
    street: Short
    city: Name
    zip_code: Annotated[str, Field(pattern=r"^[0-9]{5}$")]


class Employee(BaseModel):
    person: Person
    address: Address
    title: Short | None


class ShoppingList(BaseModel):
    items: Annotated[list[Name], Field(min_length=1, max_length=4)]


class Weather(BaseModel):
    city: Name
    unit: Literal["celsius", "fahrenheit"]
    temperature: Annotated[int, Field(ge=-50, le=60)]


class Paint(BaseModel):
    color: Color
    liters: Annotated[int, Field(ge=1, le=20)]


class Flags(BaseModel):
    urgent: bool
    reviewed: bool
    note: Short | None


class Point(BaseModel):
    x: Annotated[int, Field(ge=-100, le=100)]
    y: Annotated[int, Field(ge=-100, le=100)]


class Polygon(BaseModel):
    name: Name
    points: Annotated[list[Point], Field(min_length=3, max_length=4)]


class Book(BaseModel):
    title: Short
    author: Name
    year: Annotated[int, Field(ge=1450, le=2026)]
    genre: Literal["fiction", "history", "science", "poetry"]


class Library(BaseModel):
    books: Annotated[list[Book], Field(min_length=1, max_length=2)]


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    score: Annotated[float, Field(ge=0, le=1, multiple_of=0.01)]


class Event(BaseModel):
    name: Short
    day: date


class Ticket(BaseModel):
    id: Annotated[int, Field(ge=1, le=99999)]
    priority: Literal["low", "medium", "high"]
    tags: Annotated[list[Literal["bug", "ui", "backend", "docs"]], Field(max_length=3)]
    assignee: Person | None


class Recipe(BaseModel):
    dish: Name
    servings: Annotated[int, Field(ge=1, le=12)]
    ingredients: Annotated[list[Name], Field(min_length=1, max_length=4)]
    vegetarian: bool


class Translation(BaseModel):
    source: Short
    target_language: Literal["French", "German", "Spanish"]
    text: Short


class Matrix(BaseModel):
    rows: Annotated[list[Annotated[list[Annotated[int, Field(ge=0, le=9)]], Field(min_length=2, max_length=2)]],
                    Field(min_length=2, max_length=2)]  # fmt: skip


class Pet(BaseModel):
    species: Literal["cat", "dog", "bird"]
    name: Name
    age_years: Annotated[int, Field(ge=0, le=30)] | None


class Household(BaseModel):
    owner: Person
    pets: Annotated[list[Pet], Field(max_length=2)]
    city: City


class Answer(BaseModel):
    answer: Literal["yes", "no"]
    confidence: Annotated[int, Field(ge=1, le=5)]


CASES: list[tuple[type[BaseModel], str]] = [
    (Person, "Describe a famous scientist."),
    (City, "Tell me about the capital of France."),
    (Address, "Invent a postal address in Paris."),
    (Employee, "Invent an employee record."),
    (ShoppingList, "What should I buy for a pancake breakfast?"),
    (Weather, "What is the weather like in London today?"),
    (Paint, "I want to paint my kitchen."),
    (Flags, "Classify this support ticket: the login page is down."),
    (Point, "Give me a point on a grid."),
    (Polygon, "Describe a triangle."),
    (Book, "Recommend a classic novel."),
    (Library, "List some books for a small library."),
    (Sentiment, "Classify the sentiment of: I love this phone!"),
    (Event, "When is New Year's Day 2027?"),
    (Ticket, "File a bug: the save button does nothing."),
    (Recipe, "Give me a recipe for a simple salad."),
    (Translation, "Translate 'good morning' into French."),
    (Matrix, "Write a 2 by 2 matrix of digits."),
    (Household, "Describe a family with a cat."),
    (Answer, "Is the sky blue?"),
]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_twenty_pydantic_schemas_validate_streaming_and_not(client, temperature):
    assert len({c for c, _ in CASES}) == 20

    def ask(case: tuple[type[BaseModel], str], stream: bool) -> BaseModel | None:
        cls, question = case
        kw = {
            "model": MODEL,
            "messages": [{"role": "user", "content": question + " Answer in JSON."}],
            "response_format": cls,
            "temperature": temperature,
            "max_tokens": 400,
            "seed": 7,
        }
        if stream:
            with client.chat.completions.stream(**kw) as s:
                done = s.get_final_completion()
        else:
            done = client.chat.completions.parse(**kw)
        choice = done.choices[0]
        assert choice.finish_reason == "stop", (cls.__name__, choice.message.content)
        parsed = choice.message.parsed
        assert isinstance(parsed, cls)
        return parsed

    jobs = [(case, stream) for case in CASES for stream in (False, True)]
    with ThreadPoolExecutor(16) as ex:
        results = list(ex.map(lambda j: ask(*j), jobs))
    assert all(r is not None for r in results)
    if temperature == 0:  # greedy: the streamed answer is the same object
        for i in range(0, len(results), 2):
            assert results[i] == results[i + 1]


def test_guided_choice_every_time_and_n(client):
    choices = ["Paris", "London", "Berlin", "Madrid"]
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a European capital."}],
        temperature=1.0,
        n=12,
        max_tokens=10,
        extra_body={"guided_choice": choices},
    )
    got = [c.message.content for c in r.choices]
    assert len(got) == 12 and all(g in choices for g in got), got
    assert all(c.finish_reason == "stop" for c in r.choices)


def test_regex_and_grammar_on_completions(server):
    def complete(**extra) -> str:
        body = {
            "model": MODEL,
            "prompt": "The year the Berlin wall fell:",
            "max_tokens": 40,
            "temperature": 0.7,
        }
        r = httpx.post(server.url + "/v1/completions", json={**body, **extra}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    import re

    assert re.fullmatch(r"[0-9]{4}", complete(guided_regex="[0-9]{4}"))
    gbnf = 'root ::= "The answer is " digit digit "."\ndigit ::= [0-9]'
    assert re.fullmatch(r"The answer is [0-9]{2}\.", complete(guided_grammar=gbnf))


def test_json_object(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a cat as a JSON object."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=200,
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
         "response_format.json_schema.schema", "type"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "array", "uniqueItems": True}}}}, "response_format.json_schema.schema", "uniqueItems"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format.json_schema", "schema"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "xml"),
        ({"guided_regex": "[a-z"}, "guided_regex", "unclosed"),
        ({"guided_choice": []}, "guided_choice", "non-empty"),
        ({"guided_grammar": "root ::= ("}, "guided_grammar", "GBNF"),
        ({"guided_regex": "a+", "guided_choice": ["a"]}, "guided_choice", "at most one"),
    ],
)  # fmt: skip
def test_bad_grammars_are_400s_naming_the_field(server, extra, param, words):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **extra}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err
