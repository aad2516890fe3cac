"""Page cursors: a list's key round-trips; another list's cursor, or anything else, is refused."""

from __future__ import annotations

import pytest

from fleet import cursors
from fleet.errors import ValidationFailed


def test_a_key_round_trips_as_its_type():
    assert cursors.decode(b"w:", cursors.encode(b"w:", [12.5, 7]), tuple[float, int]) == (12.5, 7)


@pytest.mark.parametrize("cursor", ["", "%%%", "a" * 201, cursors.encode(b"g:", [12.5, 7]),
                                    cursors.encode(b"w:", ["twelve", 7]), cursors.encode(b"w:", [1.0])])
def test_anything_else_is_refused_as_the_cursor_field(cursor):
    with pytest.raises(ValidationFailed) as caught:
        cursors.decode(b"w:", cursor, tuple[float, int])
    assert [e.field for e in caught.value.errors] == ["cursor"]
