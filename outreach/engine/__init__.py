"""The cadence engine: enroll, plan, throttle, route, render, dispatch (DESIGN.md data flow)."""
