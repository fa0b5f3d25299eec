"""model.built: the hot paths' way to make a named tuple, against the constructor."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bulktag.model import Answer, Outcome, Result, built

_text = st.none() | st.text(max_size=20)

_results = st.tuples(
    st.integers(),
    _text,
    _text,
    st.sampled_from(Outcome),
    st.none() | st.integers(100, 599),
    st.integers(0, 100),
    _text,
    _text,
    st.floats(allow_nan=False),
    st.integers(),
    st.sampled_from(["add", "remove"]),
    _text,
    st.sampled_from(["glance", "ims"]),
)
_answers = st.tuples(
    st.none() | st.integers(100, 599), _text, _text, _text, st.binary(max_size=20), st.booleans()
)


@given(_results)
def test_a_built_result_is_the_result_its_constructor_makes(fields: tuple[object, ...]) -> None:
    made = built(Result, fields)
    assert type(made) is Result
    assert made._asdict() == Result(*fields)._asdict()  # type: ignore[arg-type]


@given(_answers)
def test_a_built_answer_is_the_answer_its_constructor_makes(fields: tuple[object, ...]) -> None:
    made = built(Answer, fields)
    assert type(made) is Answer
    assert made._asdict() == Answer(*fields)._asdict()  # type: ignore[arg-type]
