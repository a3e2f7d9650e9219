import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._host.env_files import (
    EnvError,
    check_variables,
    current_values,
    edit_environment,
    profile_script,
    systemd_manager_dropin,
    systemd_service_dropin,
    unit_name,
)

WANT = {'MODELSCOPE_CACHE': '/var/cache/modelscope'}


def test_appends_to_a_file_without_it():
    text, old = edit_environment('PATH="/usr/bin:/bin"\n', WANT)
    assert text == 'PATH="/usr/bin:/bin"\nMODELSCOPE_CACHE=/var/cache/modelscope\n' and old == {}


def test_replaces_in_place_and_drops_duplicates():
    before = '# comment\nMODELSCOPE_CACHE=/old\nLANG=C\nexport MODELSCOPE_CACHE="/older"\n'
    text, old = edit_environment(before, WANT)
    assert text == '# comment\nMODELSCOPE_CACHE=/var/cache/modelscope\nLANG=C\n'
    assert old == {'MODELSCOPE_CACHE': '/old'}


def test_is_stable():
    once = edit_environment('LANG=C', WANT)[0]
    assert once == 'LANG=C\nMODELSCOPE_CACHE=/var/cache/modelscope\n'
    assert edit_environment(once, WANT) == (once, {})


def test_remove():
    assert edit_environment('A=1\nMODELSCOPE_CACHE=/x\n', WANT, remove=True)[0] == 'A=1\n'


def test_values_with_spaces_are_quoted():
    assert edit_environment('', {'X': 'a b'})[0] == 'X="a b"\n'
    assert current_values('X="a b"\nY=\'c\'\n#Z=1\n') == {'X': 'a b', 'Y': 'c'}


@pytest.mark.parametrize('variables', [{'1BAD': 'x'}, {'A-B': 'x'}, {'A': 'line\nbreak'}, {'A': 'q"uote'}])
def test_bad_variables(variables):
    with pytest.raises(EnvError):
        check_variables(variables)


def test_unit_names():
    assert unit_name('vllm') == 'vllm.service'
    assert unit_name('sglang@0.service') == 'sglang@0.service'
    for bad in ('../x', 'a/b', 'x.service/../../y', ''):
        with pytest.raises(EnvError):
            unit_name(bad)


def test_generated_files():
    both = dict(WANT, MODELSCOPE_ENDPOINT='http://mirror:8080')
    assert "export MODELSCOPE_CACHE='/var/cache/modelscope'\n" in profile_script(both)
    assert systemd_manager_dropin(both).endswith(
        '[Manager]\nDefaultEnvironment="MODELSCOPE_CACHE=/var/cache/modelscope" "MODELSCOPE_ENDPOINT=http://mirror:8080"\n')
    assert '[Service]\nEnvironment="MODELSCOPE_CACHE=/var/cache/modelscope"\n' in systemd_service_dropin(WANT)
