"""How the golden runner compares one step's output with the expected one."""
import json


def json_subset(exp, act):
    """True if act has every key/value of exp (recursively); act may have more keys."""
    if isinstance(exp, dict):
        return isinstance(act, dict) and all(k in act and json_subset(v, act[k])
                                             for k, v in exp.items())
    if isinstance(exp, list):
        return isinstance(act, list) and len(exp) == len(act) and \
            all(json_subset(a, b) for a, b in zip(exp, act))
    return exp == act and type(exp) is type(act)


def same_stdout(cmd, exp, act):
    if '--output=json' in cmd and exp.strip():
        try:
            return json_subset(json.loads(exp), json.loads(act))
        except ValueError:
            return False
    return exp == act


def same_step(cmd, exp, act):
    """exp, act: (stdout, stderr, rc)."""
    return same_stdout(cmd, exp[0], act[0]) and exp[1] == act[1] and exp[2] == act[2]
