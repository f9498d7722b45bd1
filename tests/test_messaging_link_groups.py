"""Which broker routes share a link simulator (cosim.messaging.link_groups)."""

from cosim.messaging.link_groups import LinkGroup, merge_groups


def group(name: str, sources: set[str], same_time: set[str], key: tuple[str, int] = ("control", 60)) -> LinkGroup:
    return LinkGroup(key, [name], sources, same_time)


def test_groups_of_one_role_and_rate_merge_when_no_cycle_closes() -> None:
    a = group("gesscon->lessag", {"Gesscon"}, {"Lessag"})
    b = group("dso->voltage", {"VoltageDso"}, {"Voltage"})
    merged = merge_groups([a, b], {"Lessag": {"Recorder"}, "Voltage": {"Recorder"}})
    assert [m.members for m in merged] == [["gesscon->lessag", "dso->voltage"]]
    assert merged[0].sources == {"Gesscon", "VoltageDso"} and merged[0].same_time == {"Lessag", "Voltage"}


def test_a_merge_that_would_close_a_same_time_cycle_is_refused() -> None:
    # Lessag feeds VoltageDso at the same time: one link carrying both would feed itself within a step
    a = group("gesscon->lessag", {"Gesscon"}, {"Lessag"})
    b = group("dso->voltage", {"VoltageDso"}, {"Voltage"})
    merged = merge_groups([a, b], {"Lessag": {"VoltageDso"}})
    assert [m.members for m in merged] == [["gesscon->lessag"], ["dso->voltage"]]


def test_a_local_loop_keeps_two_links_and_cycles_through_other_links_count() -> None:
    # device -> agent at the same time, agent -> device time-shifted: one link for both would feed the agent
    # and take the agent's output within the same step
    up = group("device->agent", {"Devices"}, {"Agent"}, ("smx", 60))
    down = group("agent->device", {"Agent"}, set(), ("smx", 60))  # its only feed is time-shifted
    assert [m.members for m in merge_groups([up, down], {})] == [["device->agent"], ["agent->device"]]
    # agent -> meter may join the down link, unless the meter feeds the devices at the same time: then the
    # merged link would reach its own source (Agent) through the other link (Devices -> up -> Agent)
    meter = group("agent->meter", {"Agent"}, {"Meter"}, ("smx", 60))
    assert [m.members for m in merge_groups([up, down, meter], {})] == [
        ["device->agent"], ["agent->device", "agent->meter"]]
    assert [m.members for m in merge_groups([up, down, meter], {"Meter": {"Devices"}})] == [
        ["device->agent"], ["agent->device"], ["agent->meter"]]


def test_different_roles_or_rates_never_share_a_link() -> None:
    telemetry = group("telemetry", {"Grid"}, set(), ("data", 900))
    gesscon_in = group("profiles->gesscon", {"Profiles"}, {"Gesscon"}, ("data", 900))
    fast = group("devices->agent", {"Devices"}, {"Agent"}, ("data", 60))
    control = group("gesscon->lessag", {"Gesscon"}, {"Lessag"}, ("control", 900))
    merged = merge_groups([telemetry, gesscon_in, fast, control], {})
    assert [m.members for m in merged] == [["telemetry", "profiles->gesscon"], ["devices->agent"], ["gesscon->lessag"]]
